"""What a training step draws at random, world-size invariant: each draw is of the global batch
(``train.batch_size`` x ranks), of which a rank keeps its ``part``, so a run's numbers do not
depend on how many ranks share it.

Two generators, both reseeded by the loop at every step from (seed, step): ``rng`` on the host
for what the world draws on the host (prompts), ``noise_rng`` on the training device for
latents, sigmas and noise, so a step makes no host-to-device copy of random numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distar.config.tree import SigmaConfig
from distar.method.contract import TrainingWorld
from distar.method.sigmas import sample_sigma
from distar.runtime.distributed import world_size

NOISE_STREAM = 0x5EED  # separates the device generator's stream from the host one's


class Draws:
    """This rank's part of every draw of one step (``reseed`` starts a step's draws)."""

    def __init__(
        self, world: TrainingWorld, batch_size: int, rank: int, device: torch.device
    ) -> None:
        self.world, self.batch_size, self.device = world, batch_size, device
        self.part = slice(rank * batch_size, (rank + 1) * batch_size)
        self.rng = torch.Generator()
        self.noise_rng = torch.Generator(device=device)

    def reseed(self, seed: int) -> None:
        self.rng.manual_seed(seed)
        self.noise_rng.manual_seed(seed ^ NOISE_STREAM)

    def _total(self) -> int:
        return self.batch_size * world_size()

    def _part(self, draw: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        """This rank's part of a draw of the global batch: ``draw(total, *args)``."""
        return draw(self._total(), *args)[self.part]

    def batch(self) -> tuple[torch.Tensor, Any]:
        """Generator inputs: latents and conditions."""
        return (
            self._part(self.world.sample_latents, self.noise_rng),
            self.world.sample_conditions(self._total(), self.rng, self.part),
        )

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        def draw(total: int) -> torch.Tensor:
            shape = (total, *like.shape[1:])
            return torch.randn(shape, generator=self.noise_rng, device=self.device)

        return self._part(draw)

    def sigma(self, schedule: SigmaConfig) -> torch.Tensor:
        return self._part(lambda total: sample_sigma(schedule, total, self.noise_rng))
