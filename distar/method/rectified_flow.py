"""Rectified flow (SD3 / SD3.5, FLUX) in the EDM view the losses use.

A flow teacher sees ``x_t = (1 - t) x0 + t eps`` for ``t`` in (0, 1) and predicts the velocity
``v = eps - x0``. Dividing by ``1 - t``,

    x_t / (1 - t) = x0 + t / (1 - t) eps,

which is EDM's ``x = x0 + sigma eps`` with ``sigma = t / (1 - t)`` and ``x = x_t / (1 - t)``
(conversely ``t = sigma / (1 + sigma)``, ``x_t = x / (1 + sigma)``). The velocity network's
denoiser is ``D(x; sigma) = x0_hat = x_t - t v(x_t, t)`` (NVlabs/FastGen
``RFNoiseSchedule.flow_to_x0``, in float64 as there): every loss of :mod:`distar.method.losses`
applies unchanged, and CFG, being affine in ``v`` at fixed ``(x_t, t)``, is the same on ``v``
and on ``x0_hat``.

A time shift ``t' = s t / (1 + (s - 1) t)`` (SD3: ``s = 3``) multiplies EDM's sigma by ``s``:
``t' / (1 - t') = s t / (1 - t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from distar.method.losses import expand_like

Velocity = Callable[[Tensor, Tensor, Any], Tensor]  # v(x_t, t, cond), t of shape [B]
Denoiser = Callable[[Tensor, Tensor, Any], Tensor]  # D(x; sigma, cond), sigma of shape [B]


def sigma_of_time(t: Tensor) -> Tensor:
    """EDM's ``sigma = t / (1 - t)``."""
    return t / (1 - t)


def time_of_sigma(sigma: Tensor) -> Tensor:
    """Rectified flow's ``t = sigma / (1 + sigma)``."""
    return sigma / (1 + sigma)


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3's time shift ``t' = s t / (1 + (s - 1) t)`` (diffusers' ``FlowMatchEulerDiscrete``)."""
    return shift * t / (1 + (shift - 1) * t)


def flow_input(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The flow network's ``(x_t, t)`` for EDM's ``(x, sigma)``: ``x_t = x / (1 + sigma)``."""
    t = time_of_sigma(sigma)
    return x * (1 - expand_like(t, x)), t


def x0_from_velocity(x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """``x0_hat = x_t - t v``, computed in float64 as FastGen does and returned in ``v``'s
    dtype (one rounding, whatever the dtypes of ``x_t``, ``t`` and ``v``)."""
    t = expand_like(t, v).to(torch.float64)
    return (x_t.to(torch.float64) - t * v.to(torch.float64)).to(v.dtype)


def velocity_from_x0(x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """``v = (x_t - x0) / t``: the velocity whose ``x0_hat`` is ``x0`` (a one-step generator
    built from a flow teacher returns ``x0``)."""
    return (x_t - x0) / expand_like(t, x0)


def flow_denoiser(velocity: Velocity) -> Denoiser:
    """A velocity network as the EDM denoiser ``D(x; sigma, cond)`` the losses call."""

    def denoise(x: Tensor, sigma: Tensor, cond: Any) -> Tensor:
        x_t, t = flow_input(x, sigma)
        return x0_from_velocity(x_t, t, velocity(x_t, t, cond))

    return denoise
