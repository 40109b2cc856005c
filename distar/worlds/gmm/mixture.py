"""A conditional isotropic Gaussian mixture whose diffused density, score and denoiser are exact.

Under ``x = x0 + sigma eps`` a component ``N(mu_k, s_k^2 I)`` diffuses to
``N(mu_k, (s_k^2 + sigma^2) I)``, so for every sigma and prompt
``E[x0 | x, c] = sum_k gamma_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))``
with ``gamma`` the posterior responsibilities of the prompt's components.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distar.config.gmm import GMMWorldConfig


class ConditionalGMM:
    """Modes ``means [K, d]`` with stds ``stds [K]``; ``log_weights [P + 1, K]`` gives each prompt's
    mixture weights (``-inf`` where a prompt does not own a mode); the last row is the null
    prompt."""

    def __init__(self, means: Tensor, stds: Tensor, log_weights: Tensor) -> None:
        self.means, self.stds, self.log_weights = means, stds, log_weights
        self.dim = means.shape[1]
        self.null = log_weights.shape[0] - 1

    @property
    def n_prompts(self) -> int:
        return self.null

    def to(self, device: torch.device | str) -> ConditionalGMM:
        return ConditionalGMM(
            self.means.to(device), self.stds.to(device), self.log_weights.to(device)
        )

    def owners(self) -> Tensor:
        """``[K]``: the prompt owning each mode (the first prompt with nonzero weight)."""
        return torch.isfinite(self.log_weights[: self.null]).float().argmax(0)

    def _component_logits(self, x: Tensor, sigma: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        var = self.stds.square()[None, :] + sigma.reshape(-1, 1).square()  # [B, K]
        sq = (x[:, None, :] - self.means[None]).square().sum(-1)  # [B, K]
        log_normal = -0.5 * (sq / var + self.dim * torch.log(2 * math.pi * var))
        return self.log_weights[cond] + log_normal, var

    def log_prob(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """``log p_sigma(x | c)``, exact."""
        logits, _ = self._component_logits(x, sigma, cond)
        return torch.logsumexp(logits, dim=1)

    def denoise(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """The exact reference denoiser ``E[x0 | x, c]`` (EDM ``D(x; sigma, c)``)."""
        logits, var = self._component_logits(x, sigma, cond)
        gamma = torch.softmax(logits, dim=1)  # [B, K]
        shrink = self.stds.square()[None] / var  # [B, K]
        per_mode = self.means[None] + shrink[..., None] * (x[:, None, :] - self.means[None])
        return (gamma[..., None] * per_mode).sum(1)

    def score(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """``grad_x log p_sigma(x | c)``; finite at sigma = 0 as well."""
        logits, var = self._component_logits(x, sigma, cond)
        gamma = torch.softmax(logits, dim=1)
        return (gamma[..., None] * (self.means[None] - x[:, None, :]) / var[..., None]).sum(1)

    def sample(self, cond: Tensor, rng: torch.Generator) -> Tensor:
        """Exact samples ``x0 ~ p(x0 | c)``, one per entry of ``cond``."""
        probs = torch.softmax(self.log_weights[cond].cpu(), dim=1)
        modes = torch.multinomial(probs, 1, generator=rng).squeeze(1)
        noise = torch.randn(len(cond), self.dim, generator=rng)
        x = self.means.cpu()[modes] + self.stds.cpu()[modes, None] * noise
        return x.to(self.means.device)

    def moments(self, prompt: int) -> tuple[Tensor, Tensor]:
        """Exact mean ``[d]`` and covariance ``[d, d]`` of ``p(x0 | prompt)``."""
        w = torch.softmax(self.log_weights[prompt], dim=0)
        mean = w @ self.means
        second = torch.einsum("k,ki,kj->ij", w, self.means, self.means)
        second = second + torch.eye(self.dim, dtype=w.dtype, device=w.device) * (w @ self.stds**2)
        return mean, second - torch.outer(mean, mean)


def build_mixture(cfg: GMMWorldConfig, dtype: torch.dtype = torch.float32) -> ConditionalGMM:
    """Lay out ``n_prompts * modes_per_prompt`` modes on a circle of ``radius`` (first two
    coordinates; further coordinates seeded ``N(0, (radius/2)^2)``), interleaving their owners so
    every prompt's modes are far apart. Prompts are equally likely; the null prompt owns all."""
    n_modes = cfg.n_prompts * cfg.modes_per_prompt
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    means = torch.zeros(n_modes, cfg.dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = cfg.radius * torch.cos(angle), cfg.radius * torch.sin(angle)
    if cfg.dim > 2:
        rng = torch.Generator().manual_seed(cfg.geometry_seed)
        means[:, 2:] = (
            0.5 * cfg.radius * torch.randn(n_modes, cfg.dim - 2, generator=rng, dtype=torch.float64)
        )
    owner = torch.arange(n_modes) % cfg.n_prompts
    log_w = torch.full((cfg.n_prompts + 1, n_modes), -math.inf, dtype=torch.float64)
    log_w[owner, torch.arange(n_modes)] = -math.log(cfg.modes_per_prompt)
    log_w[cfg.n_prompts] = -math.log(n_modes)
    stds = torch.full((n_modes,), cfg.mode_std, dtype=torch.float64)
    return ConditionalGMM(means.to(dtype), stds.to(dtype), log_w.to(dtype))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM's time discretisation, with a final 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def probability_flow(
    denoiser, z: Tensor, cond: Tensor, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0
) -> Tensor:
    """Deterministic map noise -> data: EDM's Heun solver of ``dx/dsigma = (x - D(x)) / sigma``
    started at ``x = sigma_max z``. Used to distil the stage-0 generator."""
    sigmas = karras_sigmas(steps, sigma_min, sigma_max).tolist()
    x = z * sigmas[0]
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        sig = torch.full((len(x),), s_cur, dtype=x.dtype, device=x.device)
        slope = (x - denoiser(x, sig, cond)) / s_cur
        x_next = x + (s_next - s_cur) * slope
        if s_next > 0:
            sig_next = torch.full_like(sig, s_next)
            slope_next = (x_next - denoiser(x_next, sig_next, cond)) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (slope + slope_next)
        x = x_next
    return x
