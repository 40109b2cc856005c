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
