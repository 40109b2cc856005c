"""Checked loading of the diffusers parts every text-to-image world is made of, from the user's
local folders (``from_pretrained(..., local_files_only=True)``: nothing downloads): a folder is
checked before anything loads, and a missing or malformed one fails naming the path, what was
expected there and where to get it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class WorldLoadError(FileNotFoundError):
    """A world's weight path is missing or does not hold what it should."""


def _missing(directory: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not (directory / n).exists()]


def check_dir(spec: str, key: str, needs: tuple[str, ...], where: str) -> Path:
    if not spec:
        raise WorldLoadError(f"{key} is not set: point it at your local copy of {where}")
    path = Path(spec)
    if not path.is_dir():
        raise WorldLoadError(
            f"{key}: {path} is not a directory; expected {', '.join(needs)} "
            f"inside (a local copy of {where})"
        )
    missing = _missing(path, needs)
    if missing:
        raise WorldLoadError(
            f"{key}: {path} lacks {', '.join(missing)} (expected a local copy of {where})"
        )
    return path


def load_unet(path: Path, dtype: torch.dtype, subfolder: str | None = "unet") -> nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(
        path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True
    )


def load_schedule(pipeline: Path) -> tuple[torch.Tensor, str]:
    """``alphas_cumprod`` and ``prediction_type`` from the pipeline's scheduler config (any
    diffusers DDPM-family scheduler: DDIM, PNDM, Euler, ...)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(
        pipeline, subfolder="scheduler", local_files_only=True
    )
    return scheduler.alphas_cumprod.clone(), scheduler.config.prediction_type


def load_vae(path: Path, dtype: torch.dtype) -> nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path, torch_dtype=dtype, local_files_only=True)


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module`` in ``dtype`` (a no-op, and no diffusers warning, when it already is)."""
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    return module
