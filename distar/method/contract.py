"""What the method's training step needs of a world (:class:`TrainingWorld`): its networks,
its reference, its draws. :class:`distar.worlds.base.World` extends it with what the loop and
the evaluation harness call besides; the method layer sits below the worlds and names only
this."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


class Conditions(Protocol):
    """An opaque batch of conditions: a tensor of prompt indices (the embedded world), or a
    world's own batch of prompt strings and text embeddings. The loop only takes its length
    and slices it (per-sample chunks of a step)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> Conditions: ...


@runtime_checkable
class TrainingWorld(Protocol):
    """The networks and draws of one experiment that a training step uses.

    ``reference`` and ``assistant`` are EDM denoisers ``D(x, sigma, cond)``; ``reference`` must be
    frozen but differentiable in x; ``reference_pair`` returns ``(D(x; c), D(x; null))`` from one
    batched forward (classifier-free guidance). ``generator`` is ``x0 = g(z, cond)``. The
    parameters of ``generator`` and ``assistant`` that require grad when the world is built are
    the ones training updates (kept in fp32).
    """

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
