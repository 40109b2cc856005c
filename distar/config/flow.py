"""Config sections and presets of the rectified-flow worlds ``sd35`` (Stable Diffusion 3.5) and
``flux`` (FLUX.1-dev, or FLUX.1-schnell), torch-free.

Noise levels stay in the EDM units every loss uses: a flow time ``t`` is ``sigma = t / (1 - t)``
(:mod:`distar.method.rectified_flow`). Two facts make the flow teachers' own time
distributions presets of the existing ``lognormal`` kind, exactly:

- a logit-normal time, ``logit t ~ N(m, s^2)`` (SD3's training draw), is ``log sigma ~ N(m, s^2)``,
  since ``log sigma = log t - log(1 - t) = logit t``;
- the time shift ``t' = S t / (1 + (S - 1) t)`` multiplies sigma by ``S`` (``log sigma + log S``):
  SD3's sampler shift ``S = 3`` is ``p_mean = log 3``; FLUX's resolution-dependent
  ``mu`` (``S = e^mu``; 1.15 at 1024 px, 4096 latent tokens) is ``p_mean = mu``. The presets
  hold the 1024 px values: at another ``world.resolution`` set ``noise.*.p_mean`` to that
  resolution's ``log S`` (FLUX: ``mu = 0.5 + 0.65 (tokens - 256) / 3840``, tokens = (side/16)^2).

The pseudo-Huber constant ``loss.huber_c`` is a distance on the whole latent (the norm over all of
C x H x W, in x0 units). To hold it at the same fraction of a typical ``||Delta||`` as on SDXL,
it scales with ``sigma_data * sqrt(C H W)``: a 16-channel latent at 1024 px has 4x SDXL's
dimensions (16 x 128 x 128) and sigma_data 1.0 (the VAE's scaling factor makes the latents
unit-variance) against SDXL's 0.5, so ``c_flow = 2 x 2 x c_SDXL``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from distar.config.sections import check_range, fail, register_world_config
from distar.config.t2i import TextImageWorldConfig, register_presets

FLOW_LORA_TARGETS = ("attention", "joint_attention")
HUBER_C_SDXL = 0.1  # the SD presets' (and the config's) default loss.huber_c
HUBER_C_FLOW = HUBER_C_SDXL * 2 * 2  # sqrt(4x the dimensions) x (sigma_data 1.0 / 0.5)
SD3_SHIFT = 3.0  # StableDiffusion3Pipeline's FlowMatchEulerDiscreteScheduler(shift=3.0)
FLUX_MU_1024 = 1.15  # FluxPipeline's max_shift, reached at 4096 latent tokens (1024 px)


@dataclass(frozen=True)
class FlowWorldConfig(TextImageWorldConfig):
    """A rectified-flow world: the reference is a velocity transformer on 16-channel latents."""

    lora_target_choices: ClassVar[tuple[str, ...]] = FLOW_LORA_TARGETS
    # t_g in (0, 1]: the generator is the teacher's Euler step G(z) = z - t_g v(z, t_g) from
    # x_t = z (1.0: the sampler's first step, from pure noise; peers start there)
    generator_time: float = 1.0
    t5_tokens: int = 256  # T5 prompt tokens (the pipelines' max_sequence_length)
    uncond: str = "empty"  # SD3's negative prompt "" (true CFG)
    # "joint_attention": q, k, v, out of both streams (diffusers' SD3 / FLUX LoRA scripts)
    lora_targets: str = "joint_attention"

    def validate(self) -> None:
        super().validate()
        if self.resolution % 16:  # latents of an even side: SD3's 2 x 2 patches, FLUX's packing
            fail("world.resolution", self.resolution, "a multiple of 16")
        check_range("world.generator_time", self.generator_time, 0.0, 1.0, low_open=True)
        check_range("world.t5_tokens", self.t5_tokens, 1, 4096)


@register_world_config("sd35")
@dataclass(frozen=True)
class SD35WorldConfig(FlowWorldConfig):
    name: str = "sd35"


@register_world_config("flux")
@dataclass(frozen=True)
class FluxWorldConfig(FlowWorldConfig):
    """FLUX.1: no unconditional branch. FLUX.1-dev is guidance-distilled: its transformer takes
    a guidance value ``g`` (diffusers' ``guidance_scale`` units) in place of CFG. ``guidance``
    is the ``g`` the generator and the assistant are fed, and the second point of the
    reference's CFG direction ``(D_g - D_1) / (g - 1)``: ``loss.cfg_scale`` alpha then means the
    teacher at guidance ``1 + alpha``, as on the other worlds (:mod:`distar.worlds.flow.world`).
    FLUX.1-schnell has no guidance input: ``guidance`` is unused and CFG is refused."""

    name: str = "flux"
    t5_tokens: int = 512
    guidance: float = 3.5  # FastGen's and DanceGRPO's g for FLUX.1-dev

    def validate(self) -> None:
        super().validate()
        check_range("world.guidance", self.guidance, 1.0, 100.0, low_open=True)


def flow_noise(p_mean: float) -> dict:
    """Both noise draws as the shifted logit-normal time ``logit t ~ N(p_mean, 1)``, clamped
    to ``t`` in [0.02, 0.98] for the generator (Flow-Factory's DMD2 range) and [0.001, 0.999]
    for the assistant (the teacher's training range)."""
    sigma = lambda t: t / (1 - t)  # noqa: E731
    return {
        "noise.generator.kind": "lognormal",
        "noise.generator.p_mean": p_mean,
        "noise.generator.p_std": 1.0,
        "noise.generator.sigma_min": round(sigma(0.02), 5),
        "noise.generator.sigma_max": round(sigma(0.98), 3),
        "noise.assistant.kind": "lognormal",
        "noise.assistant.p_mean": p_mean,
        "noise.assistant.p_std": 1.0,
        "noise.assistant.sigma_min": round(sigma(0.001), 6),
        "noise.assistant.sigma_max": round(sigma(0.999), 1),
        "noise.assistant_weighting": "velocity",  # the teachers' own loss (distar.method.sigmas)
        "loss.huber_c": HUBER_C_FLOW,
    }


TINY = {"world.t5_tokens": 16}  # tiny T5: a few tokens carry a prompt's words
register_presets(
    "sd35",
    {**flow_noise(math.log(SD3_SHIFT)), "train.batch_size": 2},
    "Stable Diffusion 3.5 (Large) at 1024 px, one step from the teacher at t_g = 1",
    tiny=TINY,
)
register_presets(
    "flux",
    # alpha = g - 1 = 2.5: the reference is FLUX.1-dev at guidance 3.5, what peers match
    {**flow_noise(FLUX_MU_1024), "train.batch_size": 1, "loss.cfg_scale": 2.5},
    "FLUX.1-dev at 1024 px (guidance-distilled, g = 3.5), one step from the teacher",
    tiny=TINY,
)
