"""The trained generator of an SD run as files other tools load: a diffusers UNet folder
(``UNet2DConditionModel.from_pretrained``) and one ``.safetensors`` state dict in diffusers' key
names (``world.generator_init``, diffusers' ``load_state_dict``), both bit-exact copies of the
checkpoint's fp32 weights (the generator EMA's, when the run kept one), from an unsharded or a
sharded checkpoint alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors.torch import save_file

from distar.runtime.checkpoint import checkpoint_config, generator_weights
from distar.worlds.sd import loading

GENERATOR_PREFIX = "denoiser.unet."  # the UNet inside OneStepGenerator(UNetDenoiser(unet))
SD_WORLDS = ("sd15", "sdxl")
UNET_FOLDER = "unet"
UNET_FILE = "generator_unet.safetensors"


def generator_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's generator UNet weights under diffusers' names: the EMA's when the run
    kept one (``train.ema``: what its evaluations scored), else the last step's."""
    weights = generator_weights(checkpoint)
    return {k.removeprefix(GENERATOR_PREFIX): v.contiguous() for k, v in weights.items()}


def unet_config(checkpoint: Path) -> dict:
    """The generator UNet's architecture: its ``world.generator_init`` folder's, else the
    reference's (the world's paths are checked first; the reward model is not needed)."""
    from diffusers import UNet2DConditionModel

    world = checkpoint_config(checkpoint).world
    if world.name not in SD_WORLDS:
        raise ValueError(
            f"{checkpoint}: a {world.name!r} run; export writes an SD world's generator UNet "
            f"({', '.join(SD_WORLDS)}); this run's generator is its checkpoint's "
            "generator.safetensors"
        )
    paths = loading.check_paths(dataclasses.replace(world, reward="none"))
    if paths.generator_init is not None and paths.generator_init.is_dir():
        return UNet2DConditionModel.load_config(paths.generator_init)
    return UNet2DConditionModel.load_config(paths.reference, subfolder="unet")


def export_generator(checkpoint: Path, out: Path) -> dict[str, Path]:
    """Write ``out/unet/`` and ``out/generator_unet.safetensors``; returns both paths. The
    state dict must fill the architecture exactly (strict), so a wrong checkpoint fails here."""
    from diffusers import UNet2DConditionModel

    config = unet_config(checkpoint)
    state = generator_state(checkpoint)
    with torch.device("meta"):  # no second copy of the weights: the checkpoint's are assigned
        unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(state, strict=True, assign=True)
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / UNET_FOLDER, safe_serialization=True)
    save_file(state, str(out / UNET_FILE))
    return {"folder": out / UNET_FOLDER, "file": out / UNET_FILE}
