"""Config sections and presets of the text-to-image worlds ``sd15`` and ``sdxl`` (torch-free).

Weights are the user's: local diffusers directories (or, for the generator's start, a UNet state
dict file such as DMD2's ``dmd2_sdxl_1step_unet.bin``). ``tiny:<name>`` names a tiny random
component that :mod:`distar.worlds.sd.tiny_pipelines` writes with ``save_pretrained`` into the
cache and that then loads through exactly the code a real directory goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distar.config.sections import check_range, register_world_config
from distar.config.t2i import T2I_DEFAULTS, TextImageWorldConfig, register_presets

LORA_TARGETS = ("attention", "dmd2")


@dataclass(frozen=True)
class SDWorldConfig(TextImageWorldConfig):
    """A Stable Diffusion world: the reference is a DDPM UNet."""

    lora_target_choices: ClassVar[tuple[str, ...]] = LORA_TARGETS
    generator_timestep: int = 399  # DMD2's conditioning timestep t_g: G(z) = D(sqrt(1+s^2) z; s)
    lora_targets: str = "dmd2"  # "dmd2": DMD2's module list; "attention": q, k, v, out

    def validate(self) -> None:
        super().validate()
        check_range("world.generator_timestep", self.generator_timestep, 0, 999)


@register_world_config("sd15")
@dataclass(frozen=True)
class SD15WorldConfig(SDWorldConfig):
    name: str = "sd15"
    resolution: int = 512
    generator_timestep: int = 999  # DMD2's SD1.5 one-step generator
    uncond: str = "empty"
    vae_dtype: str = "bf16"


@register_world_config("sdxl")
@dataclass(frozen=True)
class SDXLWorldConfig(SDWorldConfig):
    name: str = "sdxl"
    resolution: int = 1024


# What every SD world sets (T2I_DEFAULTS, and its noise section). Sigma ranges: the reference's
# own, sigma(t) for t in [20, 980] for the generator's divergence (DMD2's range) and [0, 999] for
# the assistant.
SD_DEFAULTS = {
    "noise.generator.kind": "loguniform",
    "noise.generator.sigma_min": 0.138,  # sigma(20) of the scaled-linear schedule
    "noise.generator.sigma_max": 13.04,  # sigma(980)
    "noise.assistant.kind": "loguniform",
    "noise.assistant.sigma_min": 0.0292,  # sigma(0)
    "noise.assistant.sigma_max": 14.61,  # sigma(999)
    **T2I_DEFAULTS,
}


for _name, _batch, _blurb in (
    ("sd15", 8, "Stable Diffusion 1.5 at 512 px (DMD2 one-step generator, t_g = 999)"),
    ("sdxl", 2, "SDXL base at 1024 px (DMD2 one-step generator, t_g = 399)"),
):
    register_presets(_name, {**SD_DEFAULTS, "train.batch_size": _batch}, _blurb)
