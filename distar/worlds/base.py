"""What a world supplies to the training loop, and the registry worlds are chosen from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from distar.config import WorldConfig
from distar.registry import Registry


class Conditions(Protocol):
    """An opaque batch of conditions: a tensor of prompt indices (the embedded world), or a
    world's own batch of prompt strings and text embeddings. The loop only takes its length
    and slices it (per-sample chunks of a step)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Conditions: ...


class World(Protocol):
    """Reference diffusion + assistant + generator + rewards + metrics of one experiment.

    ``reference`` and ``assistant`` are EDM denoisers ``D(x, sigma, cond)``; ``reference`` must be
    frozen but differentiable in x; ``reference_pair`` returns ``(D(x; c), D(x; null))`` from one
    batched forward (classifier-free guidance). ``generator`` is ``x0 = g(z, cond)``. The
    parameters of ``generator`` and ``assistant`` that require grad when the world is built are
    the ones training updates (kept in fp32).
    """

    config: WorldConfig
    sigma_data: float
    generator: nn.Module
    assistant: nn.Module

    def reference(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor: ...

    def reference_pair(
        self, x: Tensor, sigma: Tensor, cond: Any, null: Any
    ) -> tuple[Tensor, Tensor]: ...

    def sample_conditions(self, n: int, rng: torch.Generator) -> Conditions:
        """``n`` training conditions, drawn on the host generator ``rng``, on the device."""
        ...

    def null_conditions(self, cond: Conditions) -> Conditions:
        """The unconditional counterpart of ``cond`` (same length)."""
        ...

    def sample_latents(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` generator inputs drawn on ``rng``'s device."""
        ...

    def reward(self, x0: Tensor, cond: Conditions) -> Tensor: ...

    def evaluate(self, n_per_prompt: int, seed: int) -> dict[str, float]: ...

    def plot(self, path: Path, n_per_prompt: int, seed: int) -> Path: ...


WorldBuilder = Callable[[WorldConfig, torch.device, str], World]
WORLDS: Registry[WorldBuilder] = Registry("world")


def build_world(cfg: WorldConfig, device: torch.device, init: str = "stage0") -> World:
    """Build the world named by ``cfg.name``; ``init`` picks the generator's starting point."""
    from distar.worlds import load_world_builders

    load_world_builders()
    return WORLDS.get(cfg.name)(cfg, device, init)
