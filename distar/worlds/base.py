"""What a world supplies to the training loop and the evaluation harness (:class:`World`, every
method either calls), and the registry of world builders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from distar.config.sections import WorldConfig
from distar.util.registry import Registry

if TYPE_CHECKING:
    import pandas as pd


class Conditions(Protocol):
    """An opaque batch of conditions: a tensor of prompt indices (the embedded world), or a
    world's own batch of prompt strings and text embeddings. The loop only takes its length
    and slices it (per-sample chunks of a step)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Conditions: ...


class EvalGenerator(Protocol):
    """A world's generator as the evaluation harness calls it: ``noise_shape`` and
    ``(prompts, noise) -> samples`` (images in [0, 1] for a text-to-image world; points for the
    embedded world, whose prompts are ``"prompt <i>"``). Each sample's noise comes from outside,
    so the harness fixes it per (seed, benchmark, prompt, replica)."""

    noise_shape: tuple[int, ...]

    def __call__(self, prompts: Sequence[str], noise: Tensor) -> Tensor: ...


@runtime_checkable
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
    # the noise levels the reference is defined on (a DDPM schedule's sigma(0) .. sigma(T-1);
    # (0, inf) for an exact reference); the config's noise ranges must lie inside
    sigma_range: tuple[float, float]
    generator: nn.Module
    assistant: nn.Module

    def reference(self, x: Tensor, sigma: Tensor, cond: Any) -> Tensor: ...

    def reference_pair(
        self, x: Tensor, sigma: Tensor, cond: Any, null: Any
    ) -> tuple[Tensor, Tensor]: ...

    def frozen_networks(self) -> list[nn.Module]:
        """The frozen networks with weights of their own that the generator step calls (an SD
        world's reference UNet beside a copy assistant; none for an exact reference or one
        sharing the assistant's weights). Sharded, a chunked generator step gathers them once
        for all its chunks and lets go before the generator's backward: each chunk holds them
        whole from its forward to its backward anyway, so one gather costs no peak memory over
        one per chunk."""
        ...

    def sample_conditions(
        self, n: int, rng: torch.Generator, keep: slice | None = None
    ) -> Conditions:
        """``n`` training conditions drawn on the host generator ``rng``; the ``keep`` part of
        them (all by default) returned on the device. Every rank draws the global batch and
        keeps its own part (a run's draws do not depend on its number of ranks); only that part
        is encoded."""
        ...

    def null_conditions(self, cond: Conditions) -> Conditions:
        """The unconditional counterpart of ``cond`` (same length)."""
        ...

    def sample_latents(self, n: int, rng: torch.Generator) -> Tensor:
        """``n`` generator inputs drawn on ``rng``'s device."""
        ...

    def reward(self, x0: Tensor, cond: Conditions) -> Tensor:
        """The explicit reward ``r(x0, c)``, one value per sample, differentiable in ``x0``."""
        ...

    def shard(self, offload: bool) -> None:
        """Shard every network with FSDP2 in place (``resources.strategy=fsdp``), through
        :func:`distar.runtime.sharding.shard_network`, once every rank holds the same weights.
        ``offload``: trained shards and their optimizer state on the host."""
        ...

    def evaluate(self, samples_per_prompt: int, seed: int) -> dict[str, float]:
        """The world's own metrics of the current generator (``eval/<name>`` in every run):
        ``samples_per_prompt`` samples of each of its fixed evaluation prompts."""
        ...

    def unit_scores(self, samples_per_prompt: int, seed: int) -> pd.DataFrame | None:
        """:meth:`evaluate`'s per-sample values, one row per sample keyed like a benchmark's
        per-sample rows (prompt, group, index, replica, seed), so two runs' evaluations pair
        sample by sample (``distar.track.paired``); None where a world has none of its own (the
        text-to-image worlds: their units are their benchmarks' per-sample rows)."""
        ...

    def plot(self, path: Path, samples_per_prompt: int, seed: int) -> Path:
        """A picture of the current generator's samples written to ``path``, which it returns
        (the embedded world scatters ``samples_per_prompt`` points a prompt; a text-to-image
        world draws a grid of one image for each evaluation prompt)."""
        ...

    def eval_generator(self, resolution: int = 0) -> EvalGenerator:
        """The current generator for the evaluation harness; a text-to-image world resizes its
        images to ``resolution`` (0: as generated)."""
        ...


WorldBuilder = Callable[[WorldConfig, torch.device, str], World]
WORLDS: Registry[WorldBuilder] = Registry("world")
# a world's checks of a run's config against every file it will read, without loading a weight
# (raises WorldLoadError or ConfigError naming the field); worlds that read no file register none
WorldCheck = Callable[[Any], None]  # the whole distar.config.tree.Config
WORLD_CHECKS: Registry[WorldCheck] = Registry("world check")
