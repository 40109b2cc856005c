"""Any diffusers text-to-image pipeline as the harness's generator: ``noise_shape`` and
``(prompts, noise) -> images in [0, 1]``, so a released multi-step model (SDXL, SD1.5, SD3/3.5,
FLUX) or a one-step UNet on its base pipeline (DMD2, DI*, a ``distar.cli.export`` file) is
scored by the same harness, prompts, per-sample noise, metrics and MLflow records as a distar
generator.

The harness's noise is the pipeline's initial latents (FLUX's packed into its tokens here), so
each sample's start is fixed by (seed, benchmark, prompt, replica). A sampler that draws more
noise on the way (LCM between steps, ancestral samplers) draws it from a generator seeded by
that sample's own noise: the images do not depend on the batch they were made in.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from distar.config.pipelines import FOLDER_SCHEDULER, PIPELINE_FAMILIES, PipelineConfig
from distar.config.tree import ConfigError
from distar.rewards.heads import load_state_dict
from distar.t2i.edm import DTYPES
from distar.t2i.parts import (
    STATE_DICT_SUFFIXES,
    WorldLoadError,
    check_dir,
    unet_from_state,
    weight_variant,
)

WHERE = "a diffusers pipeline folder (hf download REPO --local-dir DIR)"
UNET_WHERE = "a UNet folder (config.json), a pipeline folder with unet/, or a UNet state dict"


def pipeline_family(path: Path) -> str:
    """The family of the folder's pipeline class (model_index.json's ``_class_name``)."""
    name = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
    if name not in PIPELINE_FAMILIES:
        raise ConfigError(
            f"--pipeline: {path} holds a {name!r}; allowed: {', '.join(PIPELINE_FAMILIES)}"
        )
    return PIPELINE_FAMILIES[name]


def denoiser_folder(family: str) -> str:
    return "unet" if family in ("sd15", "sdxl") else "transformer"


def unet_location(spec: str, files: tuple[str, ...] = ()) -> Path:
    """``--unet``: a state-dict file; a folder with ``config.json``; a pipeline folder's
    ``unet/``; or a folder holding one of ``files`` (a model card's, e.g. DMD2's)."""
    path = Path(spec)
    if path.is_file():
        if path.suffix not in STATE_DICT_SUFFIXES:
            raise WorldLoadError(f"--unet: {path} is not a state dict ({UNET_WHERE})")
        return path
    for candidate in (path / "unet", path, *(path / f for f in files)):
        if (candidate / "config.json").exists() or candidate.is_file():
            return candidate
    raise WorldLoadError(f"--unet: {path} is not {UNET_WHERE}")


def load_unet_override(spec: str, pipeline: Path, dtype: torch.dtype, files=()) -> nn.Module:
    """The UNet that replaces the pipeline's: a folder through ``from_pretrained``, a state dict
    strictly into the pipeline's UNet config (DMD2 ships fp16 / fp32 ``.bin`` files)."""
    from diffusers import UNet2DConditionModel

    where = unet_location(spec, files)
    if where.is_dir():
        variant = weight_variant(where, "--unet")
        return UNet2DConditionModel.from_pretrained(
            where, torch_dtype=dtype, variant=variant, local_files_only=True
        )
    return unet_from_state(load_state_dict(where), where, pipeline, "--unet").to(dtype)


def scheduler_class(name: str):
    """diffusers' scheduler class of that name (None: the folder's own); an unknown one is
    refused naming the field."""
    import diffusers

    if name == FOLDER_SCHEDULER:
        return None
    found = getattr(diffusers, name, None)
    if found is None or not hasattr(found, "from_config"):
        raise ConfigError(f"pipeline.scheduler: got {name!r}; diffusers has no such scheduler")
    return found


def load_pipeline(cfg: PipelineConfig, device: str):
    """The pipeline folder, checked, then loaded (offline) in the resolved dtype with the
    resolved scheduler; returns ``(pipe, resolved settings)``."""
    import diffusers

    path = check_dir(cfg.path, "--pipeline", ("model_index.json",), WHERE)
    settings = cfg.resolved(pipeline_family(path))
    scheduler = scheduler_class(settings.scheduler)  # before any weight loads
    dtype = DTYPES[settings.dtype]
    parts = {}
    if cfg.unet:
        files = settings.card(settings.family).unet_files
        parts["unet"] = load_unet_override(cfg.unet, path, dtype, files)
    if (path / "safety_checker").exists():  # benchmarks score every image as generated
        parts.update(safety_checker=None, requires_safety_checker=False)
    variant = weight_variant(path / denoiser_folder(settings.family), "--pipeline")
    quiet()
    with warnings.catch_warnings():  # transformers' rename of torch_dtype, which diffusers passes
        warnings.filterwarnings("ignore", message=".*torch_dtype.*")
        pipe = diffusers.DiffusionPipeline.from_pretrained(
            path, torch_dtype=dtype, variant=variant, local_files_only=True, **parts
        )
    if scheduler is not None:
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device), settings


def quiet() -> None:
    """No progress bar per component load: the evaluation's own bars are the console."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    # per call: "the first timestep ... is 399" (the one-step cards mean it), fp32 VAE notes
    diffusers.utils.logging.set_verbosity_error()


def noise_seed(noise: Tensor) -> int:
    """A sample's seed for the sampler's own draws: a hash of its initial noise."""
    digest = hashlib.sha256(noise.detach().cpu().float().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class PipelineGenerator:
    """A loaded pipeline sampled with fixed settings (the harness's generator)."""

    def __init__(self, pipe, settings: PipelineConfig) -> None:
        self.pipe, self.settings = pipe, settings
        side = settings.resolution // pipe.vae_scale_factor
        network = pipe.unet if settings.family in ("sd15", "sdxl") else pipe.transformer
        channels = network.config.in_channels // (4 if settings.family == "flux" else 1)
        self.noise_shape = (channels, side, side)

    def call_options(self, n: int) -> dict:
        s = self.settings
        options = dict(
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            height=s.resolution,
            width=s.resolution,
            output_type="pt",
        )
        if s.timesteps:
            options["timesteps"] = s.timestep_list()
        if s.negative_prompt:
            options["negative_prompt"] = [s.negative_prompt] * n
        if s.max_sequence_length:
            options["max_sequence_length"] = s.max_sequence_length
        return options

    @torch.no_grad()
    def __call__(self, prompts, noise: Tensor) -> Tensor:
        pipe, n = self.pipe, len(prompts)
        latents = noise.to(pipe.device, pipe.dtype)
        if self.settings.family == "flux":
            latents = pipe._pack_latents(latents, n, *latents.shape[1:])
        generators = [torch.Generator().manual_seed(noise_seed(z)) for z in noise]
        with warnings.catch_warnings():  # SDXL's fp16 path calls its own deprecated upcast_vae
            warnings.filterwarnings("ignore", message=".*upcast_vae.*", category=FutureWarning)
            images = pipe(
                prompt=list(prompts), latents=latents, generator=generators, **self.call_options(n)
            ).images
        return images.float().clamp(0, 1)


def pipeline_generator(flat: dict, device: str) -> PipelineGenerator:
    return PipelineGenerator(*load_pipeline(PipelineConfig.from_flat(flat), device))
