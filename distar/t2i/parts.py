"""Checked loading of the diffusers parts every text-to-image world is made of, from the user's
local folders (``from_pretrained(..., local_files_only=True)``: nothing downloads): a folder is
checked before anything loads, and a missing or malformed one fails naming the path, what was
expected there and where to get it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from torch import nn

from distar.util.cache import materialise


class WorldLoadError(FileNotFoundError):
    """A world's weight path is missing or does not hold what it should."""


# name -> (writer module, version): ``python -m MODULE NAME DIR`` writes the component
TinyWriters = dict[str, tuple[str, str]]


def tiny_folder(spec: str, cache_dir: str, writers: TinyWriters) -> str:
    """``tiny:<name>`` -> the cache folder of that tiny random component, written on first use by
    its writer (with ``save_pretrained``: it then loads through exactly the code a user's real
    folder goes through); any other path is returned unchanged."""
    if not spec.startswith("tiny:"):
        return spec
    name = spec.removeprefix("tiny:")
    if name not in writers:
        known = ", ".join(f"tiny:{n}" for n in writers)
        raise ValueError(f"{spec!r}: unknown tiny component; known: {known}")
    module, version = writers[name]
    path = materialise(f"tiny-{name}-v{version}", module, [name], cache_dir)
    incomplete = [str(c) for c in path.rglob("config.json") if len(list(c.parent.iterdir())) < 2]
    if incomplete:
        raise RuntimeError(f"tiny component {name}: no weights beside {incomplete}")
    return str(path)


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


# the weight files' stems: diffusers models, transformers models
WEIGHT_STEMS = ("diffusion_pytorch_model", "model", "pytorch_model")
# ``diffusion_pytorch_model[.fp16][-00001-of-00003].safetensors`` and the sharded index,
# ``diffusion_pytorch_model.safetensors.index[.fp16].json`` (diffusers' and transformers' names)
_STEMS = "|".join(WEIGHT_STEMS)
_WEIGHT_FILE = re.compile(
    rf"(?:{_STEMS})(?:\.(?P<v>[A-Za-z0-9_]+))?(?:-\d+-of-\d+)?\.(?:safetensors|bin)"
    rf"|(?:{_STEMS})\.(?:safetensors|bin)\.index(?:\.(?P<vi>[A-Za-z0-9_]+))?\.json"
)
NO_VARIANT = ""


def weight_variants(folder: Path) -> set[str]:
    """The weight variants a model folder holds: ``""`` for the plain files, ``"fp16"`` for
    ``*.fp16.safetensors`` and so on (empty: no weights at all)."""
    found = set()
    for file in folder.iterdir() if folder.is_dir() else ():
        match = _WEIGHT_FILE.fullmatch(file.name)
        if match:
            found.add(match["v"] or match["vi"] or NO_VARIANT)
    return found


def weight_variant(folder: Path, key: str) -> str | None:
    """The variant to load from ``folder`` (``None``: the plain files, preferred when present;
    else ``fp16``, else the only one there); raises :class:`WorldLoadError` naming ``key`` and
    the files expected when the folder holds no weights. A folder downloaded with
    ``--include "*fp16*"`` holds only ``*.fp16.*`` files, which diffusers and transformers load
    only when told the variant."""
    found = weight_variants(folder)
    if NO_VARIANT in found:
        return None
    if not found:
        raise WorldLoadError(
            f"{key}: {folder} holds no weights (expected diffusion_pytorch_model[.fp16]"
            ".safetensors, model[.fp16].safetensors or their .bin / sharded forms)"
        )
    variant = "fp16" if "fp16" in found else sorted(found)[0]
    if len(found) > 1 and variant != "fp16":
        raise WorldLoadError(f"{key}: {folder} holds the variants {sorted(found)}; keep one")
    print(f"{key}: {folder} holds only {variant} weights; loading those", file=sys.stderr)
    return variant


def tiny_vae(latent_channels: int, scaling_factor: float, **options) -> nn.Module:
    """A tiny random four-level ``AutoencoderKL`` (latents 1/8 of the image side, as the real
    VAEs) for the tiny pipelines; ``options``: the real VAE's other fields (SD3 / FLUX: the
    shift factor, no quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 8, 16, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling_factor,
        **options,
    )


def empty_model(cls, config) -> nn.Module:
    """``cls`` built from ``config`` with every tensor on the meta device: no memory, no weight
    file read. The weights arrive from rank 0
    (:func:`distar.runtime.distributed.broadcast_networks`) after :func:`place_module` gives the
    tensors storage."""
    with torch.device("meta"):
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)


def place_module(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``; a module built on the meta device gets uninitialised storage
    there instead (its weights are received next). (:func:`distar.runtime.devices.to_device` moves a
    host tensor.)"""
    if any(p.is_meta for p in module.parameters()):
        module.to_empty(device=device)
        # to_empty gives tied weights (T5's shared / embed_tokens) storage each: tie them again,
        # or this rank holds one parameter more than rank 0 and the broadcasts disagree
        for part in module.modules():
            if callable(getattr(part, "tie_weights", None)):
                part.tie_weights()
        return module
    return module.to(device)


def load_unet(
    path: Path,
    dtype: torch.dtype,
    subfolder: str | None = "unet",
    variant: str | None = None,
    empty: bool = False,
) -> nn.Module:
    from diffusers import UNet2DConditionModel

    if empty:
        config = UNet2DConditionModel.load_config(path, subfolder=subfolder)
        return empty_model(UNet2DConditionModel, config).to(dtype)
    return UNet2DConditionModel.from_pretrained(
        path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True, variant=variant
    )


STATE_DICT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # what a UNet state dict may be


def unet_from_state(state: dict, path: Path, reference: Path, key: str) -> nn.Module:
    """A UNet state dict (read from ``path``) loaded strictly into the UNet config of the
    pipeline folder ``reference``, its tensors assigned (no second copy); a misfit raises
    :class:`WorldLoadError` naming ``key``."""
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(reference, subfolder="unet")
    unet = empty_model(UNet2DConditionModel, config)
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:  # missing / unexpected keys, or shapes of another architecture
        first = str(error).splitlines()[1:3]
        raise WorldLoadError(
            f"{key}: {path} does not fit the reference's UNet config "
            f"({' '.join(line.strip() for line in first)})"
        ) from None
    return unet


def load_schedule(pipeline: Path) -> tuple[torch.Tensor, str]:
    """``alphas_cumprod`` and ``prediction_type`` from the pipeline's scheduler config (any
    diffusers DDPM-family scheduler: DDIM, PNDM, Euler, ...)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(
        pipeline, subfolder="scheduler", local_files_only=True
    )
    return scheduler.alphas_cumprod.clone(), scheduler.config.prediction_type


def load_vae(
    path: Path, dtype: torch.dtype, variant: str | None = None, empty: bool = False
) -> nn.Module:
    from diffusers import AutoencoderKL

    if empty:
        return empty_model(AutoencoderKL, AutoencoderKL.load_config(path)).to(dtype)
    return AutoencoderKL.from_pretrained(
        path, torch_dtype=dtype, local_files_only=True, variant=variant
    )


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module`` in ``dtype`` (a no-op, and no diffusers warning, when it already is)."""
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    return module
