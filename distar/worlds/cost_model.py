"""What a text-to-image world costs a GPU, torch-free: the model the planner
(``python -m distar.cli.plan``) evaluates, and the registries each world fills with its
architectures' sizes and its measured step rows (``distar/worlds/<world>/footprint.py``,
collected by :mod:`distar.worlds.footprints`).

Per GPU, a setup holds at start-up every network unsharded (fp32 trained weights, the bf16
reference, the frozen text encoders, VAE and PickScore), and through the generator step the
weights and Adam states (sharded under FSDP), the reference, the frozen parts, FSDP's unit
buffers and the step's activations (per-image estimates in each architecture's units, scaled
by one factor per checkpointing mode fitted on the measured rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from distar.config.keys import K

GIB = 2**30
PICKSCORE_PARAMS = 0.986e9  # CLIP-H/14, held in the world's compute dtype (bf16)
# bytes per PickScore parameter at start-up: CLIPModel.from_pretrained loads fp32, and
# a text-to-image world casts it to the compute dtype only after the broadcast (attach)
PICKSCORE_STARTUP_BYTES = 4


@dataclass(frozen=True)
class Arch:
    """One architecture at its native resolution."""

    name: str
    resolution: int
    network: float  # parameters of the denoiser network (a UNet or a flow transformer)
    fsdp_unit: float  # the largest unit distar shards
    text_encoders: float  # parameters (bf16)
    vae: float  # parameters
    lora_r64: float  # adapter parameters at rank 64 on the world's default targets (x rank / 64)
    # activation GiB per image of the generator step (the step's peak), before calibration:
    act_ckpt: float  # networks and VAE checkpointed
    act_full: float  # nothing checkpointed
    # with train.generator_chunk=1: generator GiB per image + one image's loss graph
    chunk_img_ckpt: float
    chunk_fixed_ckpt: float
    chunk_img_full: float
    chunk_fixed_full: float
    vae_act_ckpt: float  # the VAE decoder's share of act_ckpt (doubles with an fp32 VAE)
    vae_act_full: float

    # where the activation estimates come from ("" where measured rows calibrate them)
    estimated: str = ""
    # built on the host and sharded onto the GPU unit by unit under FSDP (the flow worlds:
    # distar.runtime.sharding.shard_from_rank0), instead of whole on the GPU first
    shards_from_host: bool = False


# filled by each world's footprint module (distar.worlds.footprints imports them all)
ARCHES: dict[str, Arch] = {}


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


MEASURED: list[MeasuredRow] = []  # every world's measured rows
OUT_OF_MEMORY: list[MeasuredRow] = []  # setups measured out of memory: lower bounds, not fitted


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
        return a.network, a.network if self.assistant == "copy" else lora

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
    assistant or LoRA adapters, bf16 reference, frozen parts (PickScore still in fp32); no
    Adam state or gradient yet. CPU offload does not help here: it applies after sharding. A
    world that shards from the host (under FSDP) holds instead its shards (the trained ones on
    the host with offload) and one unit unsharded in fp32 while it is moved."""
    a = ARCHES[s.arch]
    pickscore = (PICKSCORE_STARTUP_BYTES - 2) * PICKSCORE_PARAMS  # beyond frozen_parts' bf16
    if s.strategy == "fsdp" and a.shards_from_host:
        trained = 0.0 if s.offload else 4 * sum(s.trained()) / shards(s)
        held = trained + 2 * a.network / shards(s) + 4 * a.fsdp_unit
        return (held + frozen_parts(s) + pickscore) / GIB
    return (4 * sum(s.trained()) + 2 * a.network + frozen_parts(s) + pickscore) / GIB


def resident_gib(s: Setup) -> float:
    """What the generator step holds besides activations and gradient shards: weights and Adam
    states (and the generator EMA's shards), the reference, the frozen parts, FSDP's unit
    buffers."""
    a, n = ARCHES[s.arch], shards(s)
    states = 0.0 if s.offload else 12 * sum(s.trained()) / n
    if s.ema and not s.offload:  # offloaded, the EMA shadows live with the host shards
        states += 4 * s.trained()[0] / n
    reference = 2 * a.network / n  # a LoRA assistant's base: the same network
    buffers = 0.0
    if s.strategy == "fsdp":
        if s.assistant == "copy":  # gathered whole through the generator step
            reference += 2 * a.network
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
    return 4 * ARCHES[row.arch].network / GIB if row.stale_grads else 0.0


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
    if ARCHES[s.arch].estimated:
        why.append(f"{s.arch} not measured")
    elif not batches:
        why.append(f"{s.arch} {'with' if s.checkpointing else 'without'} ckpt")
    elif s.batch not in batches:
        why.append(f"batch {s.batch}")
    return f"extrapolated: {', '.join(why)}" if why else "measured"


# Inference (a released model sampled for Table 1): weights in the sampling dtype, and per image
# the VAE decoder's last level (~4 tensors of 128 x H x W in 16 bits at once: ~1 GiB at 1024 px,
# an estimate; the denoiser's activations without autograd are far smaller)
DECODE_GIB_1024 = 1.0
# Seconds per denoiser call per image and per image besides (text encoders + VAE), fitted on the
# paper's Table 1 times (a GPU it does not name): SDXL 111 s / 10 images at 50 steps x 2 (CFG)
# and 2.22 s / 10 at one step give both SDXL numbers; SD3.5-Large (28 x 2) and FLUX-dev (50 x 1,
# guidance-distilled) then give theirs with SDXL's per-image rest.
_SDXL_CALL = (111 - 2.22) / (10 * 100 - 10)
IMAGE_REST_SECONDS = 0.222 - _SDXL_CALL
CALL_SECONDS = {
    "sdxl": _SDXL_CALL,
    "sd15": _SDXL_CALL / 4,  # est.: a third of SDXL's parameters on a quarter of its pixels
    "sd35": (66.23 - 10 * IMAGE_REST_SECONDS) / (10 * 28 * 2),
    "flux": (118.64 - 10 * IMAGE_REST_SECONDS) / (10 * 50),
}


def inference_gib(arch: str, weight_bytes: int, batch: int, resolution: int) -> float:
    """Estimated peak GiB of sampling ``batch`` images: every network's weights, and the
    decoder's activations per image."""
    a = ARCHES[arch]
    weights = (a.network + a.text_encoders + a.vae) * weight_bytes / GIB
    return weights + batch * DECODE_GIB_1024 * (resolution / 1024) ** 2


def inference_seconds(arch: str, calls_per_image: int, images: int) -> float:
    """Estimated seconds to sample ``images`` on the paper's GPU (see CALL_SECONDS)."""
    return images * (calls_per_image * CALL_SECONDS[arch] + IMAGE_REST_SECONDS)
