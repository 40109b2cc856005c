"""Loading a flow world's weights from the user's local diffusers folders, every path checked
before anything loads (``from_pretrained(..., local_files_only=True)``: nothing downloads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distar.config.flow import FlowWorldConfig
from distar.config.keys import K
from distar.rewards.pickscore import load_pickscore
from distar.t2i.edm import DTYPES
from distar.t2i.parts import (
    WorldLoadError,
    check_dir,
    empty_model,
    load_vae,
    weight_variant,
)
from distar.t2i.text import FlowTextEncoders
from distar.worlds.flow.tiny_pipelines import resolve
from distar.worlds.text_image import reward_paths

CLIPS = ("text_encoder", "text_encoder_2")
PIPELINE_PARTS = {  # diffusers' StableDiffusion3Pipeline and FluxPipeline folders
    "sd35": ("transformer", "vae", *CLIPS, "text_encoder_3")
    + ("tokenizer", "tokenizer_2", "tokenizer_3", "scheduler"),
    "flux": ("transformer", "vae", *CLIPS, "tokenizer", "tokenizer_2", "scheduler"),
}
# the T5 encoder's folder; the CLIP encoders come before it
T5_FOLDER = {"sd35": "text_encoder_3", "flux": "text_encoder_2"}
HF = "hf download <repo> --local-dir DIR; a gated repo: accept its licence first"
WHERE = {
    "sd35": f"stabilityai/stable-diffusion-3.5-large (or -medium) ({HF})",
    "flux": f"black-forest-labs/FLUX.1-dev (or FLUX.1-schnell) ({HF})",
}


@dataclass
class Components:
    """What a flow world is built from (loaded, or made in memory by a benchmark)."""

    reference: nn.Module  # transformer in world.dtype; frozen by the world
    assistant: nn.Module | None  # fp32 master weights ("copy"); None: LoRA on the reference
    generator: nn.Module  # fp32 master weights
    vae: nn.Module
    text: Any  # FlowTextEncoders, or anything with its encode / unconditional
    scorer: Any  # a differentiable reward model or None
    guidance_embeds: bool  # FLUX.1-dev: the transformer takes a guidance value


@dataclass(frozen=True)
class WorldPaths:
    reference: Path
    generator_init: Path | None  # a transformer folder; None: the reference's
    vae: Path
    reward_model: Path | None
    reward_processor: Path | None
    variants: dict[str, str | None]  # weight variant by folder ("transformer", "vae", ...)


def transformer_class(arch: str):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    return {"sd35": SD3Transformer2DModel, "flux": FluxTransformer2DModel}[arch]


def check_paths(cfg: FlowWorldConfig) -> WorldPaths:
    """Resolve ``tiny:`` names and check every path the world will load; raises
    :class:`WorldLoadError` naming the first bad one."""
    parts = PIPELINE_PARTS[cfg.name]
    needs = (*[f"{p}/" for p in parts], "transformer/config.json")
    ref = check_dir(
        resolve(cfg.reference, cfg.cache_dir), K.world.reference, needs, WHERE[cfg.name]
    )
    gen = None
    if cfg.generator_init:
        init = Path(cfg.generator_init)
        folder = init / "transformer" if (init / "transformer" / "config.json").exists() else init
        where = "a transformer folder (config.json and its weights)"
        gen = check_dir(str(folder), K.world.generator_init, ("config.json",), where)
    vae = ref / "vae"
    if cfg.vae:
        vae = check_dir(cfg.vae, K.world.vae, ("config.json",), "an AutoencoderKL folder")
    variants = {
        part: weight_variant(ref / part, K.world.reference)
        for part in parts
        if part.startswith(("transformer", "text_encoder"))
    }
    variants["vae"] = weight_variant(vae, K.world.vae if cfg.vae else K.world.reference)
    if gen is not None:
        variants["generator_init"] = weight_variant(gen, K.world.generator_init)
    reward, processor = reward_paths(cfg, resolve(cfg.reward_model, cfg.cache_dir))
    return WorldPaths(ref, gen, vae, reward, processor, variants)


def guidance_embeds(paths: WorldPaths, arch: str) -> bool:
    """Whether the reference transformer takes a guidance value (FLUX.1-dev), from its config."""
    config = transformer_class(arch).load_config(paths.reference, subfolder="transformer")
    return bool(config.get("guidance_embeds", False))


def load_transformer(
    folder: Path, arch: str, dtype: torch.dtype, variant: str | None, empty: bool
) -> nn.Module:
    cls = transformer_class(arch)
    if empty:
        return empty_model(cls, cls.load_config(folder)).to(dtype)
    return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, variant=variant)


def load_text_encoders(
    paths: WorldPaths, arch: str, dtype: torch.dtype, t5_tokens: int, empty: bool
) -> FlowTextEncoders:
    """CLIP-L (+ OpenCLIP-bigG for SD3.5) and T5-XXL with their tokenizers."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5EncoderModel,
    )

    def encoder(cls, part: str) -> nn.Module:
        folder = paths.reference / part
        if empty:
            return empty_model(cls, AutoConfig.from_pretrained(folder)).to(dtype)
        variant = paths.variants[part]
        return cls.from_pretrained(folder, dtype=dtype, variant=variant, local_files_only=True)

    clip = CLIPTextModelWithProjection if arch == "sd35" else CLIPTextModel
    clips = CLIPS if arch == "sd35" else CLIPS[:1]
    tokenizer_folders = ["tokenizer", "tokenizer_2", "tokenizer_3"][: len(clips) + 1]
    tokenizers = [AutoTokenizer.from_pretrained(paths.reference / t) for t in tokenizer_folders]
    encoders = [encoder(clip, part) for part in clips]
    encoders.append(encoder(T5EncoderModel, T5_FOLDER[arch]))
    return FlowTextEncoders(arch, tokenizers, encoders, t5_tokens)


def load_components(cfg: FlowWorldConfig, empty: bool = False) -> Components:
    """Check every path, then load every network (on the host; ``empty``: on the meta device,
    no weight read, for a rank that receives rank 0's weights)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    paths = check_paths(cfg)
    arch, dtype = cfg.name, DTYPES[cfg.dtype]
    variant = paths.variants["transformer"]

    def reference(dtype: torch.dtype) -> nn.Module:
        return load_transformer(paths.reference / "transformer", arch, dtype, variant, empty)

    if paths.generator_init is None:
        generator = reference(torch.float32)
    else:
        init_variant = paths.variants["generator_init"]
        generator = load_transformer(paths.generator_init, arch, torch.float32, init_variant, empty)
    scorer = None
    if paths.reward_model is not None:
        scorer = load_pickscore(paths.reward_model, paths.reward_processor, empty)
    return Components(
        reference=reference(dtype),
        assistant=None if cfg.assistant == "lora" else reference(torch.float32),
        generator=generator,
        vae=load_vae(paths.vae, DTYPES[cfg.vae_dtype], paths.variants["vae"], empty),
        text=load_text_encoders(paths, arch, dtype, cfg.t5_tokens, empty),
        scorer=scorer,
        guidance_embeds=guidance_embeds(paths, arch),
    )


__all__ = ["Components", "WorldLoadError", "check_paths", "guidance_embeds", "load_components"]
