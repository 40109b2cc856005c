"""The pieces a training step is made of (:class:`distar.method.di_star.DIStar` and the loop
compose them): Adam and its clipped, rank-averaged step, freezing a network for a forward and
its backward, the NaN/Inf guard, the step's seed, the noise-range check."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distar.config.tree import AdamConfig, NoiseConfig, fail
from distar.runtime.distributed import average_gradients
from distar.runtime.sharding import full_tensor


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the run stops instead of training on garbage."""


def check_noise_range(noise: NoiseConfig, world_range: tuple[float, float]) -> None:
    """Both noise ranges inside the reference's (1 % slack for rounded preset values): a DDPM
    UNet asked for a sigma beyond its schedule is silently evaluated at the schedule's end."""
    low, high = world_range
    for name in ("generator", "assistant"):
        sigma = getattr(noise, name)
        if sigma.sigma_min < low * 0.99:
            fail(
                f"noise.{name}.sigma_min",
                sigma.sigma_min,
                f">= {low:.4g}, the lowest noise level of the world's reference",
            )
        if sigma.sigma_max > high * 1.01:
            fail(
                f"noise.{name}.sigma_max",
                sigma.sigma_max,
                f"<= {high:.4g}, the highest noise level of the world's reference",
            )


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The parameters a run trains: what requires grad when the world hands the module over
    (a LoRA assistant trains its adapters, not the base it shares with the reference)."""
    return [p for p in module.parameters() if p.requires_grad]


def make_adam(params: list[nn.Parameter], cfg: AdamConfig):
    """Adam over ``params``, fused into one kernel where they live on a GPU (offloaded shards
    live on the host: the optimizer steps there)."""
    return torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=bool(params) and all(p.device.type == "cuda" for p in params),  # fp32 states
    )


@contextmanager
def frozen(params: list[nn.Parameter]):
    """Parameters frozen for a forward *and its backward*: flags are restored only after the
    block, because toggling them in between breaks non-reentrant gradient checkpointing."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class FiniteGuard:
    """Remembers, on the device and without a host sync, the first step at which each watched
    value was NaN/Inf; :meth:`check` (at logging, evaluation and checkpoint steps) raises."""

    def __init__(self) -> None:
        self.first: dict[str, torch.Tensor] = {}

    def watch(self, step: int, what: str, value: torch.Tensor) -> None:
        bad = ~torch.isfinite(value.detach()).all()
        seen = self.first.get(what)
        if seen is None:
            seen = torch.full((), -1, dtype=torch.long, device=value.device)
        self.first[what] = torch.where(bad & (seen < 0), step, seen)

    def check(self, latest: dict[str, float] | None = None) -> None:
        """Raise for the earliest non-finite value (the first watched, within a step)."""
        steps = {what: int(first.item()) for what, first in self.first.items()}
        bad = [(step, what) for what, step in steps.items() if step >= 0]
        if bad:
            step, what = min(bad, key=lambda b: b[0])
            raise NonFiniteLossError(
                f"step {step}: {what} is non-finite (nan or inf); stopping. "
                f"Latest metrics: {latest or {}}"
            )


def clip_and_step(
    params: list[nn.Parameter], opt: torch.optim.Optimizer, cfg: AdamConfig, sharded: bool
) -> torch.Tensor:
    """Average gradients across ranks (FSDP has reduce-scattered them already), optionally
    clip, step; returns the pre-clip norm of the whole gradient as a device tensor (the caller
    watches it for NaN/Inf)."""
    if not sharded:
        average_gradients(params)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    norm = full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
    opt.step()
    opt.zero_grad(set_to_none=True)  # only the network being stepped holds gradients
    return norm


def step_seed(seed: int, step: int) -> int:
    """Training randomness is a pure function of (seed, step): every rank draws the step's
    global batch and keeps its own part, so resuming at any step replays exactly the draws an
    uninterrupted run makes, and N ranks of batch B train on what one process of batch N x B
    would."""
    return (seed * 1_000_003 * 1_000_000_007 + step) % (2**63 - 1)


def to_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Device scalars -> floats: the one host sync of a logging step."""
    return {k: float(v) for k, v in metrics.items()}
