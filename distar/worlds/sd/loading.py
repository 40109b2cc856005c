"""Loading an SD world's weights from the user's local directories, checked before anything loads.

Every path is checked first (:func:`check_paths`), so a missing or malformed directory fails with
the path, what was expected there and where to get it -- before a model loads or a step runs.
Nothing downloads: ``from_pretrained`` gets local directories only (``local_files_only``).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distar.config.keys import K
from distar.config.sd import SDWorldConfig
from distar.config.tree import ConfigError
from distar.rewards.clip_common import clip_tokenizer
from distar.rewards.heads import load_state_dict
from distar.rewards.pickscore import load_pickscore
from distar.t2i.edm import DTYPES
from distar.t2i.parts import (
    STATE_DICT_SUFFIXES,
    WorldLoadError,
    check_dir,
    empty_model,
    load_schedule,
    load_unet,
    load_vae,
    unet_from_state,
    weight_variant,
)
from distar.t2i.text import TextEncoders
from distar.worlds.sd.tiny_pipelines import resolve
from distar.worlds.text_image import reward_paths

__all__ = [
    "Components",
    "WorldLoadError",
    "check_generator_init",
    "check_paths",
    "load_components",
]

PIPELINE_PARTS = {
    "sd15": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": (
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ),
}
WHERE = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5 (hf download <repo> --local-dir DIR)",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0 (hf download <repo> --local-dir DIR)",
}


@dataclass
class Components:
    """What an SD world is built from: loaded from the user's directories
    (:func:`load_components`), or made in memory (the benchmark's random real-size networks)."""

    alphas_cumprod: torch.Tensor
    prediction_type: str
    reference: nn.Module  # the UNet in world.dtype; frozen by the world
    assistant: nn.Module | None  # fp32 master weights ("copy"); None: LoRA on the reference
    generator: nn.Module  # fp32 master weights
    vae: nn.Module
    text: Any  # TextEncoders, or anything with its encode / unconditional
    scorer: Any  # a differentiable reward model (ClipPairScorer) or None


@dataclass(frozen=True)
class WorldPaths:
    reference: Path
    generator_init: Path | None  # None: the reference's UNet
    vae: Path  # a directory holding config.json
    reward_model: Path | None
    reward_processor: Path | None
    # the weight variant each model folder is loaded with (None: the plain files; "fp16": a
    # folder holding only *.fp16.* files), by folder: "unet", "text_encoder", "vae", ...
    variants: dict[str, str | None]


def check_paths(cfg: SDWorldConfig) -> WorldPaths:
    """Resolve ``tiny:`` names and check every path the world will load; raises
    :class:`WorldLoadError` naming the first bad one."""
    arch = cfg.name
    parts = PIPELINE_PARTS[arch]
    needs = (*[f"{p}/" for p in parts], "unet/config.json", "scheduler/scheduler_config.json")
    ref = check_dir(resolve(cfg.reference, cfg.cache_dir), K.world.reference, needs, WHERE[arch])
    gen = None
    if cfg.generator_init:
        gen = Path(cfg.generator_init)
        if gen.is_file() and gen.suffix not in STATE_DICT_SUFFIXES:
            raise WorldLoadError(
                f"world.generator_init: {gen}: expected a UNet state dict "
                f"({', '.join(STATE_DICT_SUFFIXES)}) or a UNet directory"
            )
        if not gen.is_file():
            unet_dir = gen / "unet" if (gen / "unet" / "config.json").exists() else gen
            gen = check_dir(
                str(unet_dir),
                K.world.generator_init,
                ("config.json",),
                "a UNet directory, or a state dict such as DMD2's dmd2_sdxl_1step_unet.bin",
            )
    vae = (
        check_dir(cfg.vae, K.world.vae, ("config.json",), "an AutoencoderKL directory")
        if cfg.vae
        else ref / "vae"
    )
    variants = {
        part: weight_variant(ref / part, K.world.reference)
        for part in parts
        if part.startswith(("unet", "text_encoder"))
    }
    variants["vae"] = weight_variant(vae, K.world.vae if cfg.vae else K.world.reference)
    check_vae_dtype(vae, cfg.vae_dtype)
    if gen is not None and gen.is_dir():
        variants["generator_init"] = weight_variant(gen, K.world.generator_init)
    reward, processor = reward_paths(cfg, resolve(cfg.reward_model, cfg.cache_dir))
    return WorldPaths(ref, gen, vae, reward, processor, variants)


def check_vae_dtype(vae: Path, dtype: str) -> None:
    """A VAE whose config says ``force_upcast`` (SDXL's stock VAE) overflows in fp16 and decodes
    NaNs; refuse fp16 for it before anything loads."""
    if dtype != "fp16":
        return
    config = json.loads((vae / "config.json").read_text())
    if config.get("force_upcast"):
        raise ConfigError(
            f"world.vae_dtype: got 'fp16', but {vae}/config.json says force_upcast: true (this "
            "VAE overflows in fp16 and decodes NaNs); allowed: 'bf16' or 'fp32', or an "
            "fp16-safe VAE in world.vae (e.g. madebyollin/sdxl-vae-fp16-fix)"
        )


def check_generator_init(paths: WorldPaths) -> None:
    """A state-dict ``generator_init`` against the reference UNet's config: every key and shape,
    read without materialising a tensor (safetensors' header; ``torch.load`` with ``mmap``)."""
    if paths.generator_init is None or paths.generator_init.is_dir():
        return
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(paths.reference, subfolder="unet")
    unet = empty_model(UNet2DConditionModel, config)  # meta: shapes only
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    found = state_dict_shapes(paths.generator_init)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    problems = [
        f"{len(missing)} keys missing, e.g. {missing[0]}" if missing else "",
        f"{len(unexpected)} unexpected, e.g. {unexpected[0]}" if unexpected else "",
        f"{len(wrong)} shapes differ, e.g. {wrong[0]} {found[wrong[0]]} where the "
        f"config has {expected[wrong[0]]}"
        if wrong
        else "",
    ]
    if any(problems):
        raise WorldLoadError(
            f"world.generator_init: {paths.generator_init} does not fit the reference's UNet "
            f"config ({'; '.join(p for p in problems if p)})"
        )


def state_dict_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state-dict file, no tensor data read; a file that is not one raises
    :class:`WorldLoadError` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        state = load_lazily(path)
    except (
        SafetensorError,
        RuntimeError,
        ValueError,
        OSError,
        EOFError,
        IndexError,
        KeyError,
        pickle.UnpicklingError,
    ) as error:
        why = " ".join(str(error).split())[:120]
        raise WorldLoadError(
            f"world.generator_init: {path} is not a state dict ({type(error).__name__}: {why})"
        ) from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WorldLoadError(f"world.generator_init: {path} is not a state dict of tensors")
    return {k: tuple(v.shape) for k, v in state.items()}


def load_lazily(path: Path):
    """``torch.load`` with ``mmap`` (no tensor read until touched); a file in the legacy
    (pre-zip) format cannot be mapped and is read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def load_generator_unet(paths: WorldPaths, empty: bool = False) -> nn.Module:
    """The generator's start in fp32 (master weights): the reference UNet, a UNet directory, or
    a state dict for the reference's UNet config (DMD2 ships fp32 and fp16 ``.bin`` files; an
    fp16 file is upcast). Keys must match exactly. ``empty``: on the meta device."""
    from diffusers import UNet2DConditionModel

    if paths.generator_init is None:
        variant = paths.variants["unet"]
        return load_unet(paths.reference, torch.float32, variant=variant, empty=empty)
    if paths.generator_init.is_dir():
        variant = paths.variants["generator_init"]
        return load_unet(
            paths.generator_init, torch.float32, subfolder=None, variant=variant, empty=empty
        )
    if empty:
        config = UNet2DConditionModel.load_config(paths.reference, subfolder="unet")
        return empty_model(UNet2DConditionModel, config).float()
    state = load_state_dict(paths.generator_init)
    unet = unet_from_state(state, paths.generator_init, paths.reference, K.world.generator_init)
    return unet.float()


def load_text_encoders(paths: WorldPaths, arch: str, dtype: torch.dtype, empty: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def encoder(cls, part: str):
        if empty:
            config = CLIPTextConfig.from_pretrained(paths.reference / part)
            return empty_model(cls, config).to(dtype)
        return cls.from_pretrained(
            paths.reference / part, dtype=dtype, variant=paths.variants[part], local_files_only=True
        )

    tokenizers = [clip_tokenizer(paths.reference / "tokenizer")]  # small: every rank reads them
    encoders = [encoder(CLIPTextModel, "text_encoder")]
    if arch == "sdxl":
        tokenizers.append(clip_tokenizer(paths.reference / "tokenizer_2"))
        encoders.append(encoder(CLIPTextModelWithProjection, "text_encoder_2"))
    return tokenizers, encoders


def load_reward(paths: WorldPaths, empty: bool = False):
    """The differentiable PickScore (a frozen transformers CLIP), or None."""
    if paths.reward_model is None:
        return None

    return load_pickscore(paths.reward_model, paths.reward_processor, empty)


def load_components(cfg: SDWorldConfig, empty: bool = False) -> Components:
    """Check every path, then load every network of the world (on the host). ``empty``: every
    network built from its config on the meta device instead, no weight file read (a rank that
    receives rank 0's weights: one host copy per run instead of one per rank)."""
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per model load buries the run's own console
    paths = check_paths(cfg)  # before anything loads
    check_generator_init(paths)  # a misfit state dict fails now, not after the other networks
    dtype = DTYPES[cfg.dtype]
    alphas_cumprod, prediction_type = load_schedule(paths.reference)
    unet_variant = paths.variants["unet"]

    def unet(dtype: torch.dtype) -> nn.Module:
        return load_unet(paths.reference, dtype, variant=unet_variant, empty=empty)

    tokenizers, encoders = load_text_encoders(paths, cfg.name, dtype, empty)
    return Components(
        alphas_cumprod,
        prediction_type,
        reference=unet(dtype),
        assistant=None if cfg.assistant == "lora" else unet(torch.float32),
        generator=load_generator_unet(paths, empty),
        vae=load_vae(paths.vae, DTYPES[cfg.vae_dtype], paths.variants["vae"], empty),
        text=TextEncoders(tokenizers, encoders, cfg.resolution),
        scorer=load_reward(paths, empty),
    )
