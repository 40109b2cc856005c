"""What an SD world costs a GPU: the architectures' sizes, per-image activation estimates, the
measured step rows the planner (``python -m distar.cli.plan``) is calibrated on, and the bytes a
training setup holds (at start-up, and resident through the generator step). Torch-free.

Sources: parameter counts from diffusers' ``UNet2DConditionModel`` in the SD1.5 / SDXL
configurations (counted on the meta device), FSDP unit = the largest attention or resnet;
activation estimates per image from ``shared/research/sd-worlds.md`` §7.2-7.3 (saved tensors of
one generator step, measured on CPU); step rows from the README's measured table
(``benchmarks/sd_step.py`` on one H200, fp32 masters, bf16 VAE and PickScore, copy assistant).
"""

from __future__ import annotations

from dataclasses import dataclass

from distar.config.keys import K

GIB = 2**30
PICKSCORE_PARAMS = 0.986e9  # CLIP-H/14, held in the world's compute dtype (bf16)
# bytes per PickScore parameter at start-up: CLIPModel.from_pretrained loads fp32, and
# SDWorld.__init__ casts it to the compute dtype only after the broadcast
PICKSCORE_STARTUP_BYTES = 4


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
        "sdxl",
        1024,
        2.567e9,
        0.351e9,
        0.818e9,
        83.7e6,
        196.8e6,
        act_ckpt=8.1,
        act_full=22.7,
        chunk_img_ckpt=0.55,
        chunk_fixed_ckpt=7.5,
        chunk_img_full=6.42,
        chunk_fixed_full=16.3,
        vae_act_ckpt=6.84,
        vae_act_full=11.11,
    ),
    "sd15": Arch(
        "sd15",
        512,
        0.860e9,
        0.049e9,
        0.123e9,
        83.7e6,
        67.3e6,
        act_ckpt=2.18,
        act_full=4.6,
        chunk_img_ckpt=0.14,
        chunk_fixed_ckpt=2.04,
        chunk_img_full=0.87,
        chunk_fixed_full=3.7,
        vae_act_ckpt=1.7,
        vae_act_full=2.78,
    ),
}


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


@dataclass(frozen=True)
class Setup:
    """One training setup the planner weighs; :meth:`flags` gives it as ``--set`` flags."""

    arch: str
    gpus: int = 1
    strategy: str = "ddp"
    assistant: str = "copy"
    batch: int = 1
    checkpointing: bool = True
    chunk: bool = False
    vae_fp32: bool = False
    offload: bool = False
    lora_rank: int = 64
    ema: bool = False  # a generator EMA (train.ema): one more fp32 copy of its trained shards

    def trained(self) -> tuple[float, float]:
        a = ARCHES[self.arch]
        lora = a.lora_r64 * self.lora_rank / 64
        return a.unet, a.unet if self.assistant == "copy" else lora

    def flags(self) -> str:
        sets = {
            K.resources.num_workers: self.gpus,
            K.resources.use_gpu: "true",
            K.resources.strategy: self.strategy,
            K.resources.cpu_offload: str(self.offload).lower(),
            K.world.assistant: self.assistant,
            K.train.batch_size: self.batch,
            K.world.grad_checkpointing: str(self.checkpointing).lower(),
            K.train.generator_chunk: 1 if self.chunk else 0,
            K.world.vae_dtype: "fp32" if self.vae_fp32 else "bf16",
            **({K.train.ema: 0.999} if self.ema else {}),
        }
        return " ".join(f"--set {k}={v}" for k, v in sets.items())


def shards(s: Setup) -> int:
    return s.gpus if s.strategy == "fsdp" else 1


def frozen_parts(s: Setup) -> float:
    """Bytes of the text encoders, the VAE and PickScore: whole on every rank, never sharded."""
    a = ARCHES[s.arch]
    return 2 * a.text_encoders + (4 if s.vae_fp32 else 2) * a.vae + 2 * PICKSCORE_PARAMS


def startup_gib(s: Setup) -> float:
    """Every network unsharded on the GPU before ``world.shard()``: fp32 generator, fp32 copy
    assistant or LoRA adapters, bf16 reference UNet, frozen parts (PickScore still in fp32); no
    Adam state or gradient yet. CPU offload does not help here: it applies after sharding."""
    pickscore = (PICKSCORE_STARTUP_BYTES - 2) * PICKSCORE_PARAMS  # beyond frozen_parts' bf16
    return (4 * sum(s.trained()) + 2 * ARCHES[s.arch].unet + frozen_parts(s) + pickscore) / GIB


def resident_gib(s: Setup) -> float:
    """What the generator step holds besides activations and gradient shards: weights and Adam
    states (and the generator EMA's shards), the reference, the frozen parts, FSDP's unit
    buffers."""
    a, n = ARCHES[s.arch], shards(s)
    states = 0.0 if s.offload else 12 * sum(s.trained()) / n
    if s.ema and not s.offload:  # offloaded, the EMA shadows live with the host shards
        states += 4 * s.trained()[0] / n
    reference = 2 * a.unet / n  # a LoRA assistant's base: the same UNet
    buffers = 0.0
    if s.strategy == "fsdp":
        if s.assistant == "copy":  # gathered whole through the generator step
            reference += 2 * a.unet
        # bf16 weights of this unit and the next; in the generator's backward, one unit's
        # unsharded bf16 gradients and the fp32 copy that is reduce-scattered
        buffers = (2 * 2 + 2 + 4) * a.fsdp_unit
    return (states + reference + frozen_parts(s) + buffers) / GIB


def activation_units(s: Setup) -> float:
    """The research note's activation GiB of one generator step (before calibration)."""
    a = ARCHES[s.arch]
    if s.chunk:
        per, fixed = (
            (a.chunk_img_ckpt, a.chunk_fixed_ckpt)
            if s.checkpointing
            else (a.chunk_img_full, a.chunk_fixed_full)
        )
        vae_images = 1
    else:
        per, fixed = (a.act_ckpt if s.checkpointing else a.act_full), 0.0
        vae_images = s.batch
    vae = (a.vae_act_ckpt if s.checkpointing else a.vae_act_full) if s.vae_fp32 else 0.0
    return per * s.batch + fixed + vae * vae_images


def setup_of(row: MeasuredRow) -> Setup:
    return Setup(row.arch, batch=row.batch, checkpointing=row.checkpointing, vae_fp32=row.vae_fp32)


def stale_gib(row: MeasuredRow) -> float:
    return 4 * ARCHES[row.arch].unet / GIB if row.stale_grads else 0.0


def basis(s: Setup) -> str:
    """'measured' for a setup the measured rows cover, else 'extrapolated: ' and why."""
    why = [f"{s.gpus} GPUs"] if s.gpus > 1 else []
    why += [
        name
        for name, on in (
            ("fsdp", s.strategy == "fsdp"),
            ("lora", s.assistant == "lora"),
            ("chunk", s.chunk),
            ("offload", s.offload),
            ("fp32 VAE", s.vae_fp32),
        )
        if on
    ]
    batches = {r.batch for r in MEASURED if (r.arch, r.checkpointing) == (s.arch, s.checkpointing)}
    if not batches:
        why.append(f"{s.arch} {'with' if s.checkpointing else 'without'} ckpt")
    elif s.batch not in batches:
        why.append(f"batch {s.batch}")
    return f"extrapolated: {', '.join(why)}" if why else "measured"
