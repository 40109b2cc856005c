"""What an SD world costs a GPU: the architectures' sizes, per-image activation estimates and
the measured step rows the planner (``python -m distar.plan``) is calibrated on. Torch-free.

Sources: parameter counts from diffusers' ``UNet2DConditionModel`` in the SD1.5 / SDXL
configurations (counted on the meta device), FSDP unit = the largest attention or resnet;
activation estimates per image from ``shared/research/sd-worlds.md`` §7.2-7.3 (saved tensors of
one generator step, measured on CPU); step rows from the README's measured table
(``benchmarks/sd_step.py`` on one H200, fp32 masters, bf16 VAE and PickScore, copy assistant).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
PICKSCORE_PARAMS = 0.986e9  # CLIP-H/14, held in the world's compute dtype (bf16)


@dataclass(frozen=True)
class Arch:
    """One SD architecture at its native resolution."""

    name: str
    resolution: int
    unet: float  # parameters
    fsdp_unit: float  # the largest unit distar shards (an attention of the deepest block)
    text_encoders: float  # parameters (bf16)
    vae: float  # parameters
    lora_r64: float  # adapter parameters at rank 64 on DMD2's target list (scale with rank)
    # activation GiB per image of the generator step (the step's peak) -- research §7.3:
    act_ckpt: float  # UNets and VAE checkpointed
    act_full: float  # nothing checkpointed
    # with train.generator_chunk=1: generator GiB per image + one image's loss graph
    chunk_img_ckpt: float
    chunk_fixed_ckpt: float
    chunk_img_full: float
    chunk_fixed_full: float
    vae_act_ckpt: float  # the VAE decoder's share of act_ckpt (doubles with an fp32 VAE)
    vae_act_full: float


ARCHES = {
    "sdxl": Arch(
        "sdxl", 1024, 2.567e9, 0.351e9, 0.818e9, 83.7e6, 196.8e6,
        act_ckpt=8.1, act_full=22.7,
        chunk_img_ckpt=0.55, chunk_fixed_ckpt=7.5, chunk_img_full=6.42, chunk_fixed_full=16.3,
        vae_act_ckpt=6.84, vae_act_full=11.11,
    ),
    "sd15": Arch(
        "sd15", 512, 0.860e9, 0.049e9, 0.123e9, 83.7e6, 67.3e6,
        act_ckpt=2.18, act_full=4.6,
        chunk_img_ckpt=0.14, chunk_fixed_ckpt=2.04, chunk_img_full=0.87, chunk_fixed_full=3.7,
        vae_act_ckpt=1.7, vae_act_full=2.78,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class MeasuredRow:
    """One measured step (README table; one H200, fp32 masters, copy assistant, one GPU)."""

    arch: str
    batch: int
    checkpointing: bool
    step_ms: float
    peak_gib: float
    vae_fp32: bool = False
    # measured before gradients were freed after each optimiser step: the assistant's
    # gradients were still alive in the generator step
    stale_grads: bool = False


MEASURED = (
    MeasuredRow("sdxl", 2, True, 3457, 90.8),
    MeasuredRow("sdxl", 4, True, 3965, 116.5),
    MeasuredRow("sd15", 8, True, 1676, 53.4, stale_grads=True),
    MeasuredRow("sd15", 16, True, 2093, 80.0, stale_grads=True),
    MeasuredRow("sd15", 8, False, 1033, 101.9, stale_grads=True),
)
# gpu-step-floor.md: SDXL batch 2 without checkpointing, fp32 masters, both networks'
# gradients alive: out of memory on a 139.8 GiB H200 -- a lower bound the model must respect
OUT_OF_MEMORY = (MeasuredRow("sdxl", 2, False, 0.0, 139.8, stale_grads=True),)
