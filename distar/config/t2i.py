"""What every text-to-image world's config shares (torch-free): the weights it reads, the
assistant (copy or LoRA), dtypes, the PickScore reward and its unit, prompts, and the parts of
the presets that do not depend on the architecture (report columns, objective, tiny overrides).
``sd.py`` (UNets) and ``flow.py`` (rectified-flow transformers) add what is their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distar.config.sections import (
    WorldConfig,
    WorldPreset,
    check_choice,
    check_range,
    fail,
    register_preset,
)

DTYPES = ("bf16", "fp16", "fp32")
# compute dtypes of trained networks: fp16 would need a loss scaler (torch's GradScaler) that
# this loop does not run, and unscaled fp16 gradients underflow silently; bf16 has fp32's range
TRAIN_DTYPES = ("bf16", "fp32")
UNCOND = ("empty", "zeros")
ASSISTANTS = ("copy", "lora")
REWARDS = ("none", "pickscore")
# the unit of r that loss.reward_scale multiplies: PickScore's cosine similarity, as the paper's
# tables print it (0.2304), or its logit, logit_scale x cosine (~23, as PickScore was trained)
REWARD_UNITS = ("cosine", "logit")


@dataclass(frozen=True)
class TextImageWorldConfig(WorldConfig):
    """Reference network (frozen), assistant (a trainable full copy of the reference, or LoRA
    adapters on it), one-step generator, VAE, text encoders, reward."""

    text_to_image: ClassVar[bool] = True
    extra: ClassVar[str] = "t2i"
    lora_target_choices: ClassVar[tuple[str, ...]] = ("attention",)
    reference: str = ""  # diffusers pipeline dir (its layout: the world's PIPELINE_PARTS)
    generator_init: str = ""  # "": the reference network; a network directory (or state dict)
    vae: str = ""  # "": the reference's vae/; or a separate AutoencoderKL directory
    resolution: int = 1024  # pixels; latents are resolution / 8
    uncond: str = "zeros"  # unconditional branch: "zeros" (SDXL, as DMD2) or "empty" prompt
    assistant: str = "copy"  # "copy": full trainable copy; "lora": adapters on the reference
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_targets: str = "attention"  # one of lora_target_choices
    dtype: str = "bf16"  # compute dtype (trained weights stay fp32 masters)
    vae_dtype: str = "fp32"
    grad_checkpointing: bool = True  # generator, assistant, reference and VAE decode
    reward: str = "pickscore"
    reward_model: str = ""  # PickScore directory ("": $DISTAR_PICKSCORE)
    reward_processor: str = ""  # its processor/tokenizer directory ("": the model's, or env)
    reward_resolution: int = 224  # decoded images are resized to this before the reward model
    reward_units: str = "cosine"  # one of REWARD_UNITS: what r (and eval/reward) is measured in
    prompts: str = ""  # training prompts: Parti .tsv, or one per line; "": a built-in list
    eval_prompts: int = 8  # the first N prompts are the fixed evaluation set
    cache_dir: str = ""  # where tiny components are written ("": $DISTAR_CACHE or ~/.cache/distar)

    def validate(self) -> None:
        check_range("world.resolution", self.resolution, 8, 8192)
        if self.resolution % 8:
            fail("world.resolution", self.resolution, "a multiple of 8")
        check_choice("world.uncond", self.uncond, UNCOND)
        check_choice("world.assistant", self.assistant, ASSISTANTS)
        check_range("world.lora_rank", self.lora_rank, 1, 4096)
        check_range("world.lora_alpha", self.lora_alpha, 0.0, 1e6, low_open=True)
        check_choice("world.lora_targets", self.lora_targets, self.lora_target_choices)
        if self.dtype == "fp16":
            why = "fp16 trains without a loss scaler here: its gradients underflow silently"
            fail("world.dtype", self.dtype, f"one of {TRAIN_DTYPES} ({why})")
        check_choice("world.dtype", self.dtype, TRAIN_DTYPES)
        check_choice("world.vae_dtype", self.vae_dtype, DTYPES)
        check_choice("world.reward", self.reward, REWARDS)
        check_choice("world.reward_units", self.reward_units, REWARD_UNITS)
        check_range("world.reward_resolution", self.reward_resolution, 8, 4096)
        check_range("world.eval_prompts", self.eval_prompts, 1, 100_000)

    def reward_unit(self) -> str:
        return f"PickScore's {self.reward_units} (world.reward_units)"

    def trained_metrics(self) -> frozenset[str]:
        """PickScore is the trained reward: ``eval/reward`` and every benchmark's PickScore."""
        if self.reward == "none":
            return frozenset()
        return frozenset({"reward", "parti/pickscore", "coco/pickscore", "hps/pickscore"})


# What every text-to-image preset sets outside its world and noise sections.
T2I_DEFAULTS = {
    "loss.weighting": "dmd_normalised",
    "optim.generator.lr": 1e-6,  # SiD-LSG; DMD2 used 5e-7 for SDXL
    "optim.assistant.lr": 1e-6,
    "optim.generator.grad_clip": 10.0,
    "optim.assistant.grad_clip": 10.0,
    "optim.assistant_rounds": 1,
    # the generator forward an assistant round would draw costs 128-195 ms on SDXL (~4 % of a
    # step); at lr 1e-6 one update barely moves the samples the assistant fits (DMD2 does this)
    "optim.reuse_generator_samples": True,
    "train.log_every": 10,
    "train.steps": 2000,
    "eval.samples_per_prompt": 2,
    # held-out benchmarks at train.eval_every and at the end: 200 Parti prompts stratified over
    # its 12 categories, 200 COCO-2014 captions (the shipped first 1,000 unless
    # DISTAR_COCO_CAPTIONS names the 30k file), HPSv2 (50 per style) when DISTAR_HPS_PROMPTS is
    # set. 600 one-step images and their scores: ~1 min on an H200 at SDXL size (estimated).
    # COCO FID here is torchmetrics' on 200 images: for ranking trials, not for the paper's
    # columns (eval.fid_protocol gives those).
    "eval.benchmarks": "parti:200,coco:200,hps?:200",
}
# report columns: the world's reward (trained on) and the held-out benchmark metrics
T2I_METRICS = ("reward", "parti/imagereward", "parti/pickscore", "coco/clip_score", "coco/fid")
TINY_METRICS = T2I_METRICS[:-1]  # tiny metric models have no Inception network: no FID
# what a search maximises: ImageReward on Parti prompts (a human-preference model the
# generator never saw, on prompts it never trained on), while COCO CLIP score (x 100, the
# torchmetrics convention) stays above a floor: 31.0 is 0.9 below DMD2-SDXL's published
# 31.89, i.e. prompt alignment may not fall much below the one-step model DI* starts from
T2I_OBJECTIVE = ("parti/imagereward", "coco/clip_score")
T2I_PARETO = ("coco/fid", "parti/imagereward")  # fidelity and diversity vs preference
TINY_PARETO = ("coco/clip_score", "parti/imagereward")
T2I_FLOOR = 31.0
SMOKE = {"train.steps": 4, "train.log_every": 2, "world.eval_prompts": 2}


def tiny_overrides(world: str) -> dict:
    """A ``<world>-tiny`` preset: tiny random ``world``-shaped components (``tiny:<world>``),
    a tiny PickScore and tiny metric models, at 64 px on the CPU."""
    return {
        "world.name": world,
        "world.reference": f"tiny:{world}",
        "world.reward_model": "tiny:pickscore",
        "world.resolution": 64,
        "world.dtype": "fp32",
        "world.vae_dtype": "fp32",
        "world.lora_rank": 4,
        "world.lora_alpha": 4.0,
        "world.reward_resolution": 32,
        "world.eval_prompts": 4,
        "train.batch_size": 4,
        "train.steps": 20,
        "train.log_every": 5,
        "train.device": "auto",
        # a few Parti / COCO prompts from the shipped files, scored by tiny random metric
        # models: the tables and image grids of a real run, in seconds (HPSv2's prompts are
        # not shipped: add hps?:4 where DISTAR_HPS_PROMPTS is set)
        "eval.benchmarks": "parti:6,coco:4",
        "eval.tiny_metrics": True,
        "eval.batch_size": 4,
    }


TINY_SMOKE = {
    "train.steps": 4,
    "train.batch_size": 2,
    "train.log_every": 2,
    "world.eval_prompts": 2,
}


def register_presets(world: str, overrides: dict, blurb: str, tiny: dict | None = None) -> None:
    """``world`` (its defaults, the paper's knobs in their units) and ``<world>-tiny`` (the
    same on tiny random components, with ``tiny`` on top: the whole path on a CPU)."""
    register_preset(
        WorldPreset(
            name=world,
            world=world,
            overrides={"world.name": world, **T2I_DEFAULTS, **overrides},
            smoke=SMOKE,
            paper_scales=(1.0, 1.0),  # the paper's alpha_rew / alpha_cfg, untranslated
            metrics=T2I_METRICS,
            objective=T2I_OBJECTIVE,
            floor=T2I_FLOOR,
            pareto=T2I_PARETO,
            description=blurb,
        )
    )
    register_preset(
        WorldPreset(
            name=f"{world}-tiny",
            world=world,
            overrides={**tiny_overrides(world), **(tiny or {})},
            smoke=TINY_SMOKE,
            paper_scales=(1.0, 1.0),
            metrics=TINY_METRICS,
            objective=T2I_OBJECTIVE,
            floor=0.0,  # tiny random CLIP: its scores mean nothing, so no floor binds
            pareto=TINY_PARETO,
            description=f"tiny random {world}-shaped components (CPU, offline): the whole path",
        )
    )
