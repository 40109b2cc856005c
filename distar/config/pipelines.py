"""Evaluating a released text-to-image model, torch-free: how one diffusers pipeline samples
(:class:`PipelineConfig`, validated on construction, recorded with the run as ``pipeline.*``)
and the published settings of every model the paper's Table 1 names (:data:`MODEL_CARDS`).

A setting left at its "unset" value (``steps=0``, ``guidance=-1``, ``scheduler=""``, ...)
takes the model card's: the card named by ``model``, else the card of the pipeline's family
(:data:`FAMILY_CARDS`). Each card says where its numbers come from.

Units: ``guidance`` is diffusers' ``guidance_scale`` (``D_null + g (D_c - D_null)``; for FLUX-dev
the value fed to its guidance embedding), not distar's ``loss.cfg_scale`` (= g - 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from distar.config.sections import ConfigError, Section, check_choice, check_range, fail

FAMILIES = ("sd15", "sdxl", "sd3", "flux")
# diffusers' pipeline class (model_index.json "_class_name") -> family
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
DTYPE_NAMES = ("bf16", "fp16", "fp32")
FOLDER_SCHEDULER = "folder"  # the scheduler the pipeline folder ships


@dataclass(frozen=True)
class ModelCard:
    """A released model's published sampling settings and how to find it under a models folder.

    ``folders``: names it is found under (a diffusers pipeline folder; for ``base`` models a UNet
    folder, a pipeline folder whose ``unet/`` is used, or a folder holding one of ``unet_files``).
    ``base``: the card whose pipeline the UNet runs on ("" : the folder is the pipeline).
    ``arch``: its architecture in the planner (:mod:`distar.worlds.cost_model`)."""

    name: str
    family: str
    folders: tuple[str, ...]
    steps: int
    guidance: float
    source: str  # where these settings are published
    scheduler: str = FOLDER_SCHEDULER
    timesteps: tuple[int, ...] = ()
    resolution: int = 1024
    dtype: str = "fp16"
    negative_prompt: str = ""
    max_sequence_length: int = 0  # 0: the pipeline's default
    base: str = ""
    unet_files: tuple[str, ...] = ()
    arch: str = "sdxl"


SDXL_CARD = "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0 (card example)"
DMD2_CARD = "https://github.com/tianweiy/DMD2 README, 1-step SDXL (shared/research/sd-worlds.md)"
XDG_CARD = "XDG-XHS distar_1024.ipynb (shared/research/sd-worlds.md): LCM, t=399, guidance 0"


def one_step(name: str, folder: str, source: str = XDG_CARD, **kw: Any) -> ModelCard:
    """A one-step SDXL UNet on SDXL-Base, sampled as DMD2 samples: LCMScheduler at t=399 (the
    generator map G(z) = x0-prediction at 399), no guidance, fp16."""
    return ModelCard(
        name,
        "sdxl",
        (folder,),
        steps=1,
        guidance=0.0,
        source=source,
        scheduler="LCMScheduler",
        timesteps=(399,),
        base="SDXL-Base",
        **kw,
    )


MODEL_CARDS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            "SDXL-Base",
            "sdxl",
            ("stable-diffusion-xl-base-1.0",),
            steps=50,  # the pipeline's default; the paper's Table 1 says 50
            guidance=5.0,  # StableDiffusionXLPipeline's default guidance_scale
            source=SDXL_CARD + "; fp16 variant; Euler (the folder's); Table 1: 50 steps",
        ),
        ModelCard(
            "SDXL-DPO",
            "sdxl",
            ("dpo-sdxl-text2image-v1",),
            steps=50,
            guidance=5.0,
            source="https://huggingface.co/mhdang/dpo-sdxl-text2image-v1 (card: guidance_scale=5)",
            base="SDXL-Base",
        ),
        ModelCard(
            "SD3.5-Large",
            "sd3",
            ("stable-diffusion-3.5-large",),
            steps=28,
            guidance=3.5,
            source="https://huggingface.co/stabilityai/stable-diffusion-3.5-large (card: bf16, "
            "28 steps, guidance_scale=3.5)",
            dtype="bf16",
            arch="sd35",
        ),
        ModelCard(
            "FLUX-dev",
            "flux",
            ("FLUX.1-dev",),
            steps=50,
            guidance=3.5,  # the guidance embedding's value (FLUX-dev is guidance-distilled)
            source="https://huggingface.co/black-forest-labs/FLUX.1-dev (card: bf16, 1024 px, "
            "50 steps, guidance_scale=3.5, max_sequence_length=512)",
            dtype="bf16",
            max_sequence_length=512,
            arch="flux",
        ),
        one_step(
            "DMD2-SDXL",
            "DMD2",
            DMD2_CARD,
            unet_files=("dmd2_sdxl_1step_unet_fp16.bin", "dmd2_sdxl_1step_unet.bin"),
        ),
        one_step("Diff-Instruct-SDXL", "diff_instruct_1step"),
        one_step("SIM-SDXL", "sim_1step"),
        one_step("DI++-SDXL", "dipp_1step"),
        one_step("DI*-SDXL", "distar_short_1step"),
        one_step("DI*-SDXL (long train)", "distar_long_1step"),
    )
}
# a pipeline of this family without --model samples as its flagship card says
FAMILY_CARDS = {
    "sd15": ModelCard(
        "SD1.5",
        "sd15",
        (),
        steps=50,
        guidance=7.5,
        source="https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 (pipeline "
        "defaults: 50 steps, guidance_scale=7.5)",
        resolution=512,
        arch="sd15",
    ),
    "sdxl": MODEL_CARDS["SDXL-Base"],
    "sd3": MODEL_CARDS["SD3.5-Large"],
    "flux": MODEL_CARDS["FLUX-dev"],
}


@dataclass(frozen=True)
class PipelineConfig(Section):
    """How ``python -m distar.cli.evaluate --pipeline DIR`` samples: the folder, an optional UNet
    to put in it, and the settings (unset ones resolved from the model card: :meth:`resolved`)."""

    section: ClassVar[str] = "pipeline"
    path: str = ""  # a diffusers pipeline folder (model_index.json)
    unet: str = ""  # a UNet folder or state-dict file replacing the pipeline's UNet
    model: str = ""  # a MODEL_CARDS name: its settings, and its Table 1 row
    family: str = ""  # "": read from the folder's model_index.json
    steps: int = 0  # 0: the card's
    guidance: float = -1.0  # diffusers' guidance_scale; -1: the card's
    scheduler: str = ""  # a diffusers scheduler class, or "folder"; "": the card's
    timesteps: str = ""  # "399" or "999,749,..." (custom timesteps); "": the card's
    negative_prompt: str = ""  # "": none (SDXL then uses zeros for the unconditional)
    resolution: int = 0  # image side in px; 0: the card's
    dtype: str = ""  # bf16 / fp16 / fp32; "": the card's
    max_sequence_length: int = 0  # T5 tokens (SD3, FLUX); 0: the card's / the pipeline's

    def validate(self) -> None:
        if self.model:
            check_choice("pipeline.model", self.model, tuple(MODEL_CARDS))
        if self.family:
            check_choice("pipeline.family", self.family, FAMILIES)
        check_range("pipeline.steps", self.steps, 0, 1000)
        if self.guidance != -1.0:
            check_range("pipeline.guidance", self.guidance, 0.0, 100.0)
        if self.scheduler and not (
            self.scheduler == FOLDER_SCHEDULER or self.scheduler.endswith("Scheduler")
        ):
            fail("pipeline.scheduler", self.scheduler, "'folder' or a diffusers class *Scheduler")
        try:
            steps = self.timestep_list()
        except ValueError:
            fail("pipeline.timesteps", self.timesteps, "comma-separated integers in [0, 999]")
        if any(not 0 <= t <= 999 for t in steps) or steps != sorted(steps, reverse=True):
            fail("pipeline.timesteps", self.timesteps, "decreasing integers in [0, 999]")
        check_range("pipeline.resolution", self.resolution, 0, 4096)
        if self.resolution % 16:
            fail("pipeline.resolution", self.resolution, "a multiple of 16 (0: the card's)")
        if self.dtype:
            check_choice("pipeline.dtype", self.dtype, DTYPE_NAMES)
        check_range("pipeline.max_sequence_length", self.max_sequence_length, 0, 4096)

    def timestep_list(self) -> list[int]:
        return [int(t) for t in self.timesteps.split(",") if t.strip()]

    def card(self, family: str) -> ModelCard:
        return MODEL_CARDS[self.model] if self.model else FAMILY_CARDS[family]

    def resolved(self, family: str) -> PipelineConfig:
        """Every unset setting from the card (``family``: the folder's, when not given)."""
        family = self.family or family
        if family not in FAMILIES:
            raise ConfigError(f"pipeline.family: got {family!r}; allowed: {', '.join(FAMILIES)}")
        card = self.card(family)
        if card.family != family:
            raise ConfigError(
                f"pipeline.model: {card.name!r} is a {card.family} model, the folder a {family} "
                "pipeline"
            )
        # the card's timesteps go with the card's steps: a --steps of one's own samples the
        # scheduler's spacing; --timesteps sets both
        timesteps = self.timesteps or ("" if self.steps else ",".join(map(str, card.timesteps)))
        steps = len(timesteps.split(",")) if timesteps else self.steps or card.steps
        if self.steps and timesteps and self.steps != steps:
            fail("pipeline.steps", self.steps, f"{steps}: the number of pipeline.timesteps")
        return dataclasses.replace(
            self,
            family=family,
            steps=steps,
            guidance=card.guidance if self.guidance == -1.0 else self.guidance,
            scheduler=self.scheduler or card.scheduler,
            timesteps=timesteps,
            negative_prompt=self.negative_prompt or card.negative_prompt,
            resolution=self.resolution or card.resolution,
            dtype=self.dtype or card.dtype,
            max_sequence_length=self.max_sequence_length or card.max_sequence_length,
        )

    def calls_per_image(self) -> int:
        """Denoiser calls per image of the resolved settings: two per step under CFG (diffusers
        guides when guidance_scale > 1), one for FLUX (its guidance is an embedding)."""
        return self.steps * (2 if self.guidance > 1 and self.family != "flux" else 1)

    def to_flat(self) -> dict[str, Any]:
        return {f"pipeline.{k}": v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> PipelineConfig:
        return cls(**{k.removeprefix("pipeline."): v for k, v in flat.items()})
