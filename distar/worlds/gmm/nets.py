"""Small networks for the embedded world: a one-step generator and an EDM-preconditioned denoiser.

The split follows NVlabs/edm: the preconditioner (EDMDenoiser) wraps a raw network F, so the
denoiser is ``D(x; sigma, c) = c_skip x + c_out F(c_in x, c_noise, c)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(width_in: int, width: int, width_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(width_in, width), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.SiLU()]
    layers.append(nn.Linear(width, width_out))
    return nn.Sequential(*layers)


class OneStepGenerator(nn.Module):
    """``x0 = g(z, c)``: an MLP on the latent and a learned prompt embedding."""

    def __init__(self, dim: int, n_conds: int, width: int, depth: int, embed: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_conds, embed)
        self.net = mlp(dim + embed, width, dim, depth)

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.embed(cond)], dim=1))


class FourierNoise(nn.Module):
    """Fixed sinusoidal features of EDM's ``c_noise = log(sigma) / 4``."""

    def __init__(self, n: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.linspace(-2, 4, n), persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        angle = c_noise[:, None] * self.freqs[None]
        return torch.cat([torch.sin(angle), torch.cos(angle), c_noise[:, None]], dim=1)


class EDMDenoiser(nn.Module):
    """EDM-preconditioned conditional denoiser ``D(x; sigma, c)`` (Karras et al. 2022, Table 1)."""

    def __init__(
        self, dim: int, n_conds: int, sigma_data: float, width: int, depth: int, embed: int = 32
    ) -> None:
        super().__init__()
        self.sigma_data = sigma_data
        self.noise = FourierNoise()
        self.embed = nn.Embedding(n_conds, embed)
        self.net = mlp(dim + 2 * 16 + 1 + embed, width, dim, depth)

    def scalings(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sd2, s = self.sigma_data**2, sigma.reshape(-1, 1)
        c_skip = sd2 / (s.square() + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s.square() + sd2)
        c_in = 1 / torch.sqrt(s.square() + sd2)
        return c_skip, c_out, c_in

    def raw(self, x: Tensor, sigma: Tensor, cond: Tensor, c_in: Tensor) -> Tensor:
        features = torch.cat([c_in * x, self.noise(torch.log(sigma) / 4), self.embed(cond)], dim=1)
        return self.net(features)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        c_skip, c_out, c_in = self.scalings(sigma)
        return c_skip * x + c_out * self.raw(x, sigma, cond, c_in)


class ResidualDenoiser(EDMDenoiser):
    """``D(x; sigma, c) = D_base(x; sigma, c) + c_out F(c_in x, c_noise, c)`` with F's last layer
    zero: at initialisation an exact copy of the frozen base (the paper copies the reference into
    the assistant), trainable from there. The base is a callable, not a parameter."""

    def __init__(
        self, base, dim: int, n_conds: int, sigma_data: float, width: int, depth: int
    ) -> None:
        super().__init__(dim, n_conds, sigma_data, width, depth)
        self.base = base
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        _, c_out, c_in = self.scalings(sigma)
        return self.base(x, sigma, cond) + c_out * self.raw(x, sigma, cond, c_in)
