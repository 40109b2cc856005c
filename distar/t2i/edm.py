"""The EDM view of a DDPM UNet (eps- or v-prediction), and the DMD2 one-step generator map.

A DDPM sample ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` (``a_t`` = ``alphas_cumprod[t]``) is the
EDM sample ``x = x0 + sigma eps`` scaled by ``sqrt(a_t)``, with ``sigma_t = sqrt((1 - a_t) / a_t)``
(diffusers' ``EulerDiscreteScheduler.sigmas``). So with ``c_in = 1 / sqrt(sigma^2 + 1)``:

- eps-prediction:  ``D(x; sigma) = x - sigma * eps_hat(c_in x, t(sigma))``
- v-prediction:  ``D(x; sigma) = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v_hat(c_in x, t)``

(k-diffusion's ``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser``; DDPM writes the second as
``x0 = sqrt(a) x_t - sqrt(1 - a) v``). ``t(sigma)`` interpolates log-sigma linearly between the
schedule's integer timesteps, as diffusers' ``_sigma_to_t``; UNets take float timesteps.

The one-step generator of DMD2 / DI* feeds pure noise ``z ~ N(0, I)`` to the UNet *as if it were*
``x_t`` at the conditioning timestep ``t_g`` (399 for DMD2-SDXL, 999 for DMD2-SD1.5) and keeps
its x0 prediction. In EDM terms ``x_t = z`` means ``x = z / c_in``, so

    ``G(z) = D(sqrt(1 + sigma_g^2) z; sigma_g)``  -- not ``D(sigma_g z; sigma_g)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor, nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class DDPMSchedule:
    """sigma <-> t for a discrete DDPM schedule given by its ``alphas_cumprod``."""

    def __init__(self, alphas_cumprod: Tensor) -> None:
        a = alphas_cumprod.double()
        self.alphas_cumprod = a
        self.sigmas = ((1 - a) / a).sqrt()
        self.log_sigmas = self.sigmas.log()
        self._on_device: dict[torch.device, Tensor] = {}  # no host-to-device copy per call

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma(self, t: int) -> float:
        return float(self.sigmas[t])

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Float timesteps: log-sigma interpolation between neighbouring integer timesteps,
        clamped to [0, T - 1]."""
        log_sigmas = self._on_device.get(sigma.device)
        if log_sigmas is None:
            log_sigmas = self._on_device[sigma.device] = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.double().log()
        high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
        low = high - 1
        w = (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
        return (low + w).clamp(0, len(log_sigmas) - 1).float()


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16/fp16 compute over fp32 master weights; a no-op for fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


UNetCall = Callable[[Tensor, Tensor, "object"], Tensor]  # (x_t, t, cond) -> network output


def edm_denoise(
    net: UNetCall, prediction_type: str, x: Tensor, sigma: Tensor, t: Tensor, cond
) -> Tensor:
    """``D(x; sigma)`` from a DDPM network output at timestep ``t`` (see the module docstring).
    Computed in fp32 around the network; ``sigma`` and ``t`` are ``[B]``."""
    s = sigma.float().reshape(-1, *([1] * (x.dim() - 1)))
    c_in = (s.square() + 1).rsqrt()
    out = net(c_in * x, t, cond).float()
    if prediction_type == "epsilon":
        return x - s * out
    if prediction_type == "v_prediction":
        return x * c_in.square() - s * c_in * out
    raise ValueError(f"prediction_type {prediction_type!r}: expected 'epsilon' or 'v_prediction'")


class UNetDenoiser(nn.Module):
    """An EDM denoiser ``D(x, sigma, cond)`` on a diffusers ``UNet2DConditionModel``."""

    def __init__(
        self, unet: nn.Module, schedule: DDPMSchedule, prediction_type: str, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.unet = unet
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.dtype = dtype

    def call_unet(self, x_t: Tensor, t: Tensor, cond) -> Tensor:
        with autocast(x_t.device, self.dtype):
            return self.unet(x_t, t, **cond.unet_kwargs(x_t.dtype)).sample

    def forward(self, x: Tensor, sigma: Tensor, cond) -> Tensor:
        t = self.schedule.sigma_to_t(sigma)
        return edm_denoise(self.call_unet, self.prediction_type, x, sigma, t, cond)


class OneStepGenerator(nn.Module):
    """``x0 = G(z, c) = D_theta(sqrt(1 + sigma_g^2) z; sigma_g, c)`` at ``t_g`` (DMD2's map)."""

    def __init__(self, denoiser: UNetDenoiser, timestep: int) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.timestep = timestep
        self.sigma_g = denoiser.schedule.sigma(timestep)

    def forward(self, z: Tensor, cond) -> Tensor:
        n = len(z)
        sigma = torch.full((n,), self.sigma_g, device=z.device)
        t = torch.full((n,), float(self.timestep), device=z.device)
        x = math.sqrt(1 + self.sigma_g**2) * z
        d = self.denoiser
        return edm_denoise(d.call_unet, d.prediction_type, x, sigma, t, cond)
