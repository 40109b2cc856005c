"""Rectified-flow transformers (SD3 / SD3.5, FLUX) as the EDM denoisers the losses call, and the
one-step generator made from one.

:class:`FlowDenoiser` maps EDM's ``(x, sigma)`` to the transformer's ``(x_t, t)`` and its
velocity back to ``x0_hat = x_t - t v`` (:mod:`distar.method.rectified_flow`, where the
conversion and its closed-form tests live). How a transformer is called (its time unit, its
conditioning, FLUX's packing and guidance) is a :data:`VelocityCall` its world supplies.

The one-step generator is the teacher's own Euler step from pure noise at ``t_g``:
``G(z) = z - t_g v(z, t_g)`` (``x_t = z``; with ``t_g = 1``, the sampler's first step), the flow
analogue of DMD2's map; FLUX and SD3 have no published one-step start, so peers start here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from distar.method.rectified_flow import flow_input, x0_from_velocity
from distar.t2i.edm import autocast

# (transformer, x_t [B, C, H, W], t [B] in [0, 1], conditions, guidance [B] or None) -> v
VelocityCall = Callable[[nn.Module, Tensor, Tensor, Any, Tensor | None], Tensor]


class FlowDenoiser(nn.Module):
    """An EDM denoiser ``D(x, sigma, cond)`` on a velocity transformer. ``guidance``: the value
    a guidance-distilled transformer (FLUX.1-dev) is fed unless a call passes its own per-sample
    ``guidance`` tensor; None for a transformer without that input."""

    def __init__(
        self,
        transformer: nn.Module,
        call: VelocityCall,
        dtype: torch.dtype,
        guidance: float | None = None,
    ) -> None:
        super().__init__()
        self.transformer, self.call, self.dtype = transformer, call, dtype
        self.guidance = guidance

    def velocity(self, x_t: Tensor, t: Tensor, cond, guidance: Tensor | None = None) -> Tensor:
        """``v(x_t, t; c)`` in fp32, the transformer run under autocast in the compute dtype."""
        if guidance is None and self.guidance is not None:
            guidance = torch.full_like(t, self.guidance)
        with autocast(x_t.device, self.dtype):
            return self.call(self.transformer, x_t, t, cond, guidance).float()

    def forward(self, x: Tensor, sigma: Tensor, cond, guidance: Tensor | None = None) -> Tensor:
        x_t, t = flow_input(x.float(), sigma.float())
        return x0_from_velocity(x_t, t, self.velocity(x_t, t, cond, guidance))


class OneStepFlowGenerator(nn.Module):
    """``x0 = G(z, c) = z - t_g v_theta(z, t_g; c)`` (see the module docstring)."""

    def __init__(self, denoiser: FlowDenoiser, time: float) -> None:
        super().__init__()
        self.denoiser, self.time = denoiser, time

    def forward(self, z: Tensor, cond) -> Tensor:
        t = torch.full((len(z),), self.time, device=z.device)
        return x0_from_velocity(z.float(), t, self.denoiser.velocity(z.float(), t, cond))
