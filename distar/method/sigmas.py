"""Noise-level distributions pi(sigma) and the assistant's denoising weighting lambda(sigma)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from distar.config import choices
from distar.config.keys import K
from distar.config.tree import SigmaConfig
from distar.util.registry import Registry

SigmaSampler = Callable[[SigmaConfig, int, torch.Generator], Tensor]
SIGMA_DISTRIBUTIONS: Registry[SigmaSampler] = Registry("noise.*.kind", choices.SIGMA_DISTRIBUTIONS)


@SIGMA_DISTRIBUTIONS.register("lognormal")
def lognormal_sigma(cfg: SigmaConfig, n: int, rng: torch.Generator) -> Tensor:
    """``log sigma ~ N(p_mean, p_std^2)``, clamped; the paper draws ``exp(2 n - 2)``: (-2, 2)."""
    sigma = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(n, generator=rng, device=rng.device))
    return sigma.clamp(cfg.sigma_min, cfg.sigma_max)


@SIGMA_DISTRIBUTIONS.register("loguniform")
def loguniform_sigma(cfg: SigmaConfig, n: int, rng: torch.Generator) -> Tensor:
    """``log sigma`` uniform on ``[log sigma_min, log sigma_max]``."""
    lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
    return torch.exp(lo + (hi - lo) * torch.rand(n, generator=rng, device=rng.device))


SIGMA_DISTRIBUTIONS.complete()


def sample_sigma(cfg: SigmaConfig, n: int, rng: torch.Generator) -> Tensor:
    """``n`` draws of pi(sigma) on ``rng``'s device."""
    return SIGMA_DISTRIBUTIONS.get(cfg.kind)(cfg, n, rng)


AssistantWeighting = Callable[[Tensor, float], Tensor]
ASSISTANT_WEIGHTINGS: Registry[AssistantWeighting] = Registry(
    K.noise.assistant_weighting, choices.ASSISTANT_WEIGHTINGS
)


@ASSISTANT_WEIGHTINGS.register("edm")
def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's ``lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``: unit loss at init."""
    return (sigma.square() + sigma_data**2) / (sigma * sigma_data).square()


@ASSISTANT_WEIGHTINGS.register("uniform")
def uniform_assistant_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    return torch.ones_like(sigma)


@ASSISTANT_WEIGHTINGS.register("velocity")
def velocity_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """Rectified flow's velocity matching in EDM units: with ``x0_hat = x_t - t v`` and
    ``t = sigma / (1 + sigma)``, ``||v_hat - v||^2 = ||D - x0||^2 / t^2``, so
    ``lambda = ((1 + sigma) / sigma)^2`` (the flow teachers' own loss without their time
    weighting; Flow-Factory fits its fake score so)."""
    return ((1 + sigma) / sigma).square()


ASSISTANT_WEIGHTINGS.complete()
