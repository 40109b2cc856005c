"""Closed-form helpers for the theory tests: a Gaussian generator ``x0 = A z + b`` whose
diffused density ``N(b, A A^T + sigma^2 I)`` has an exact score and denoiser."""

from __future__ import annotations

import torch
from torch import Tensor

from distar.worlds.gmm.mixture import ConditionalGMM

DTYPE = torch.float64

A0 = torch.tensor([[0.8, 0.3], [-0.2, 1.3]])
B0 = torch.tensor([0.7, -0.4])
N = 200_000


def draws(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 2, generator=g, dtype=DTYPE),
        torch.randn(n, 2, generator=g, dtype=DTYPE),
    )


def batch(sigma: float, n: int = N, prompt: int = 0):
    return (
        torch.full((n,), sigma, dtype=DTYPE),
        torch.full((n,), prompt, dtype=torch.long),
        torch.full((n,), 2, dtype=torch.long),
    )


class GaussianGenerator:
    def __init__(self, A: Tensor, b: Tensor) -> None:
        self.A = A.clone().to(DTYPE).requires_grad_(True)
        self.b = b.clone().to(DTYPE).requires_grad_(True)

    @property
    def params(self) -> list[Tensor]:
        return [self.A, self.b]

    def sample(self, z: Tensor) -> Tensor:
        return z @ self.A.T + self.b

    def covariance(self, sigma: float, detach: bool = False) -> Tensor:
        A = self.A.detach() if detach else self.A
        return A @ A.T + sigma**2 * torch.eye(len(self.b), dtype=DTYPE)

    def score(self, x: Tensor, sigma: float, detach: bool = False) -> Tensor:
        """Exact ``grad log p_theta,sigma(x)``; ``detach`` treats theta as a constant."""
        b = self.b.detach() if detach else self.b
        cov = self.covariance(sigma, detach)
        return -torch.linalg.solve(cov, (x - b).T).T

    def denoiser(self, sigma: float, detach: bool = True):
        """The generator's exact denoiser ``x + sigma^2 s_theta(x)`` as an EDM callable."""
        return lambda x, s, c: x + sigma**2 * self.score(x, sigma, detach)


def gaussian_kl(mu0: Tensor, cov0: Tensor, mu1: Tensor, cov1: Tensor) -> Tensor:
    """``KL(N(mu0, cov0) || N(mu1, cov1))``."""
    d = len(mu0)
    inv1 = torch.linalg.inv(cov1)
    diff = mu1 - mu0
    return 0.5 * (
        torch.trace(inv1 @ cov0) + diff @ inv1 @ diff - d + torch.logdet(cov1) - torch.logdet(cov0)
    )


def reference_mixture() -> ConditionalGMM:
    """Two prompts in 2-D: prompt 0 owns modes 0, 1; prompt 1 owns mode 2; null owns all."""
    means = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [0.0, -2.0]], dtype=DTYPE)
    stds = torch.tensor([0.5, 0.7, 0.6], dtype=DTYPE)
    log_w = torch.log(
        torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0], [0.4, 0.3, 0.3]], dtype=DTYPE)
    )
    return ConditionalGMM(means, stds, log_w)


def gaussian_reference(mean: Tensor, std: float) -> ConditionalGMM:
    """A one-mode 'mixture': a Gaussian reference N(mean, std^2 I) for every prompt."""
    return ConditionalGMM(
        mean.to(DTYPE)[None], torch.tensor([std], dtype=DTYPE), torch.zeros(2, 1, dtype=DTYPE)
    )


def flat_grad(loss: Tensor, params: list[Tensor]) -> Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def relative_error(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ---- the same densities under rectified flow: x_t = (1 - t) x0 + t eps, v = eps - x0 ---------
# Derived in flow coordinates, independently of distar.method.rectified_flow's conversion: a
# component N(m, S) gives x_t ~ N((1 - t) m, (1 - t)^2 S + t^2 I), and with C = cov(x_t),
# u = x_t - (1 - t) m: E[x0 | x_t] = m + (1 - t) S C^-1 u and E[eps | x_t] = t C^-1 u.
def mixture_velocity(mix: ConditionalGMM):
    """The mixture's exact velocity ``E[eps - x0 | x_t, c]``."""

    def velocity(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        a, tt = (1 - t)[:, None], t[:, None]
        var = a.square() * mix.stds.square()[None] + tt.square()  # [B, K]
        u = x_t[:, None, :] - a[..., None] * mix.means[None]  # [B, K, d]
        log_normal = -0.5 * (u.square().sum(-1) / var + mix.dim * torch.log(2 * torch.pi * var))
        gamma = torch.softmax(mix.log_weights[cond] + log_normal, dim=1)
        x0 = mix.means[None] + (a * mix.stds.square()[None] / var)[..., None] * u
        eps = (tt / var)[..., None] * u
        return (gamma[..., None] * (eps - x0)).sum(1)

    return velocity


def gaussian_velocity(gen: GaussianGenerator):
    """The generator's exact velocity (theta detached, as its denoiser), one t per batch."""

    def velocity(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        s = t[0]
        A, b = gen.A.detach(), gen.b.detach()
        cov = (1 - s) ** 2 * A @ A.T + s**2 * torch.eye(len(b), dtype=DTYPE)
        w = torch.linalg.solve(cov, (x_t - (1 - s) * b).T).T
        return s * w - (b + (1 - s) * w @ (A @ A.T))

    return velocity
