"""``python -m distar.plan --world sdxl --gpus 8 --gpu-memory 80``: which SD training setups fit
your GPUs, best first, with predicted GiB and images/s per GPU and the exact ``--set`` flags.

The memory model (GiB per GPU at the generator step, the step's peak):

    peak = weights_and_adam + frozen + fsdp_buffers + max(k * activations(b), gradients)

- weights_and_adam: 12 B per trained parameter (fp32 master + two fp32 Adam moments), / N
  under FSDP, on the host with CPU offload;
- frozen: the bf16 reference (gathered whole under FSDP during the generator step), text
  encoders, VAE (bf16 or fp32), PickScore;
- activations(b): the research note's per-image estimates (shared/research/sd-worlds.md §7.3),
  scaled by one factor k per checkpointing mode, calibrated on the measured rows;
- gradients: 4 B per parameter of the larger trained network (one network holds gradients at a
  time), / N under FSDP; they grow as activations are freed, hence the max.

Step time: linear in the batch per architecture through the measured checkpointed rows, times a
measured no-checkpointing speed-up; FSDP adds half its all-gather / reduce-scatter traffic as
exposed time at an assumed bus bandwidth; CPU offload adds PCIe copies and a host Adam step.
What is assumed rather than measured is said in the output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from distar.config_base import ConfigError
from distar.refusals import refusing
from distar.worlds.sd.footprint import ARCHES, GIB, MEASURED, OUT_OF_MEMORY, PICKSCORE_PARAMS
from distar.worlds.sd.footprint import MeasuredRow as Row

HEADROOM_GIB = 2.0  # CUDA context, allocator fragmentation
BUS_GBPS = 200.0  # assumed all-gather / reduce-scatter bus bandwidth (NVLink class), GB/s
OVERLAP = 0.5  # assumed share of FSDP traffic hidden behind compute
PCIE_GBPS = 25.0  # assumed host <-> GPU copy bandwidth for CPU offload
HOST_ADAM_PARAMS_PER_S = 1e9  # assumed CPU Adam rate per rank
# step time without checkpointing / with, same batch: SD1.5 measured (README, batch 8); SDXL
# from gpu-step-floor.md's bf16 rows (ours ran out of memory without checkpointing)
NO_CKPT_SPEEDUP = {"sd15": 1033 / 1676, "sdxl": 1391 / 2589}
ASSUMED_COSTS = {"chunk": 1.05, "vae_fp32": 1.10}  # not measured: +5 %, +10 % step time
BATCHES = (1, 2, 4, 8, 16, 32, 64)
EXTRAPOLATION = 4  # batches up to 4 x the largest measured one of the world


@dataclass(frozen=True)
class Setup:
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

    def trained(self) -> tuple[float, float]:
        a = ARCHES[self.arch]
        lora = a.lora_r64 * self.lora_rank / 64
        return a.unet, a.unet if self.assistant == "copy" else lora

    def flags(self) -> str:
        sets = {
            "resources.num_workers": self.gpus,
            "resources.use_gpu": "true",
            "resources.strategy": self.strategy,
            "resources.cpu_offload": str(self.offload).lower(),
            "world.assistant": self.assistant,
            "train.batch_size": self.batch,
            "world.grad_checkpointing": str(self.checkpointing).lower(),
            "train.generator_chunk": 1 if self.chunk else 0,
            "world.vae_dtype": "fp32" if self.vae_fp32 else "bf16",
        }
        return " ".join(f"--set {k}={v}" for k, v in sets.items())


def shards(s: Setup) -> int:
    return s.gpus if s.strategy == "fsdp" else 1


def resident_gib(s: Setup) -> float:
    """Weights, Adam states and frozen networks: what stays on the GPU between steps."""
    a = ARCHES[s.arch]
    states = 0.0 if s.offload else 12 * sum(s.trained()) / shards(s)
    frozen = 2 * a.unet + 2 * a.text_encoders + (4 if s.vae_fp32 else 2) * a.vae
    frozen += 2 * PICKSCORE_PARAMS
    buffers = 2 * 2 * a.fsdp_unit if s.strategy == "fsdp" else 0.0  # this unit + the next
    return (states + frozen + buffers) / GIB


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


def calibrate() -> dict[bool, float]:
    """k per checkpointing mode: least squares of measured peak - resident - stale gradients
    on activation_units over the measured rows (through the origin)."""
    k = {}
    for mode in (True, False):
        rows = [r for r in MEASURED if r.checkpointing == mode]
        xs = [activation_units(setup_of(r)) for r in rows]
        ys = [r.peak_gib - resident_gib(setup_of(r)) - stale_gib(r) for r in rows]
        k[mode] = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    return k


def setup_of(row: Row) -> Setup:
    return Setup(row.arch, batch=row.batch, checkpointing=row.checkpointing, vae_fp32=row.vae_fp32)


def stale_gib(row: Row) -> float:
    return 4 * ARCHES[row.arch].unet / GIB if row.stale_grads else 0.0


def peak_gib(s: Setup, k: dict[bool, float]) -> float:
    gradients = 0.0 if s.offload else 4 * max(s.trained()) / shards(s) / GIB
    return resident_gib(s) + max(k[s.checkpointing] * activation_units(s), gradients)


def step_ms(s: Setup) -> float:
    rows = [r for r in MEASURED if r.arch == s.arch and r.checkpointing]
    (b1, t1), (b2, t2) = [(r.batch, r.step_ms) for r in rows[:2]]
    slope = (t2 - t1) / (b2 - b1)
    t = t1 + slope * (s.batch - b1)
    if not s.checkpointing:
        t *= NO_CKPT_SPEEDUP[s.arch]
    t *= ASSUMED_COSTS["chunk"] if s.chunk else 1.0
    t *= ASSUMED_COSTS["vae_fp32"] if s.vae_fp32 else 1.0
    return t + fsdp_ms(s) + offload_ms(s)


def fsdp_ms(s: Setup) -> float:
    """Exposed FSDP traffic: bf16 gathers (generator 3, assistant 4, reference 1 per step) and
    fp32 reduce-scatters of both trained networks, (N-1)/N of it over the bus."""
    if s.strategy != "fsdp" or s.gpus == 1:
        return 0.0
    u = ARCHES[s.arch].unet
    gen, assistant = s.trained()
    gathered = 2 * (3 * u + 4 * u + u)  # a LoRA assistant gathers its (shared) UNet as well
    reduced = 4 * (gen + assistant)
    traffic = (gathered + reduced) * (s.gpus - 1) / s.gpus
    return 1000 * (1 - OVERLAP) * traffic / (BUS_GBPS * 1e9)


def offload_ms(s: Setup) -> float:
    if not s.offload:
        return 0.0
    local = sum(s.trained()) / shards(s)
    copies = 8 * local / (PCIE_GBPS * 1e9)  # fp32 gradients down, fp32 weights up
    return 1000 * (copies + local / HOST_ADAM_PARAMS_PER_S)


def candidates(arch: str, gpus: int, assistants: tuple[str, ...]):
    strategies = ("ddp", "fsdp") if gpus > 1 else ("ddp", "fsdp-offload")
    largest = EXTRAPOLATION * max(r.batch for r in MEASURED if r.arch == arch)
    batches = [b for b in BATCHES if b <= largest]
    for strategy, assistant, ckpt, chunk, vae32, offload, batch in itertools.product(
        strategies, assistants, (True, False), (False, True), (False, True), (False, True), batches
    ):
        if strategy == "fsdp-offload":
            if not offload:
                continue
            strategy = "fsdp"
        elif offload and strategy != "fsdp":
            continue
        yield Setup(arch, gpus, strategy, assistant, batch, ckpt, chunk, vae32, offload)


def assumptions(s: Setup) -> int:
    """How many unmeasured costs a setup's speed rests on."""
    return s.chunk + s.vae_fp32 + s.offload + (s.assistant == "lora") + (s.strategy == "fsdp")


def plan(arch: str, gpus: int, gpu_memory: float, assistants=("copy", "lora")) -> list[tuple]:
    """The setups that fit ``gpu_memory`` GiB (less headroom), as (images/s per GPU, peak GiB,
    setup), best first: most images/s (within 5 %, fewer assumed costs first), then least
    memory; one setup -- the best -- per strategy, assistant, offload and checkpointing."""
    k = calibrate()
    rows = []
    for s in candidates(arch, gpus, assistants):
        peak = peak_gib(s, k)
        if peak <= gpu_memory - HEADROOM_GIB:
            rows.append((s.batch / step_ms(s) * 1000, peak, s))
    rows.sort(key=lambda r: (-round(math.log(r[0]) / math.log(1.05)), assumptions(r[2]), r[1]))
    best: dict[tuple, tuple] = {}
    for row in rows:
        s = row[2]
        best.setdefault((s.strategy, s.assistant, s.offload, s.checkpointing), row)
    return list(best.values())


def smallest(arch: str, gpus: int) -> tuple[float, Setup]:
    k = calibrate()
    setups = candidates(arch, gpus, ("copy", "lora"))
    return min(((peak_gib(s, k), s) for s in setups), key=lambda r: r[0])


def calibration_report() -> str:
    """The model against every measured row, and the out-of-memory bound."""
    k = calibrate()
    lines = [
        f"memory model: k = {k[True]:.3f} (checkpointed), {k[False]:.3f} (not); against the "
        "measured rows (one H200, fp32 masters, bf16 VAE, copy assistant):",
        "| world | batch | checkpointing | measured GiB | predicted GiB | error | measured ms |"
        " predicted ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in MEASURED:
        s = setup_of(r)
        got = peak_gib(s, k) + stale_gib(r)
        lines.append(
            f"| {r.arch} | {r.batch} | {'yes' if r.checkpointing else 'no'} | {r.peak_gib:.1f} | "
            f"{got:.1f} | {(got - r.peak_gib) / r.peak_gib:+.1%} | {r.step_ms:.0f} | "
            f"{step_ms(s):.0f} |"
        )
    for r in OUT_OF_MEMORY:
        got = peak_gib(setup_of(r), k) + stale_gib(r)
        verdict = "consistent" if got > r.peak_gib else "INCONSISTENT"
        lines.append(
            f"out of memory at {r.peak_gib} GiB ({r.arch}, batch {r.batch}, no checkpointing): "
            f"predicted {got:.1f} GiB, {verdict}"
        )
    lines.append(
        "k (not checkpointed) rests on one row, so that row's error is 0 by construction; step "
        "times interpolate the checkpointed rows of each world (0 error on them by construction)."
    )
    return "\n".join(lines)


def check_report(path: str) -> str:
    """The model against rows ``benchmarks/sd_step.py --json`` wrote (one GPU, fp32 masters)."""
    k = calibrate()
    lines = ["| row | measured GiB | predicted GiB | error | measured img/s | predicted img/s |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    if not Path(path).is_file():
        raise ConfigError(f"--check: {path} is not a file (what benchmarks/sd_step.py writes)")
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"--check: {path}:{number} is not a JSON row") from None
        if r["arch"] not in ARCHES:
            continue
        s = Setup(
            r["arch"],
            strategy="fsdp" if r.get("fsdp") else "ddp",
            assistant="lora" if r["lora_rank"] else "copy",
            batch=r["batch"],
            checkpointing=r["grad_ckpt"],
            chunk=bool(r.get("chunk")),
            vae_fp32=r.get("vae_dtype") == "fp32",
            lora_rank=r["lora_rank"] or 64,
        )
        got, want = peak_gib(s, k), r["peak_gib"]
        lines.append(
            f"| {s.arch} b{s.batch} ckpt={s.checkpointing} {s.strategy} {s.assistant} | "
            f"{want:.1f} | {got:.1f} | {(got - want) / want:+.1%} | {r['images_per_s']:.2f} | "
            f"{s.batch / step_ms(s) * 1000:.2f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distar.plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--world", default="sdxl", help="sd15 or sdxl (default sdxl)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs of the trial (default 1)")
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=80.0,
        help="GiB per GPU as torch reports it (80 GB cards ~79.3, H200 ~139.8; default 80)",
    )
    parser.add_argument("--top", type=int, default=10, help="how many setups to print")
    parser.add_argument("--assistant", choices=("copy", "lora"), help="only this assistant")
    parser.add_argument(
        "--calibration", action="store_true", help="print the model against the measured rows"
    )
    parser.add_argument(
        "--check", metavar="JSONL", help="the model against rows benchmarks/sd_step.py wrote"
    )
    parser.add_argument("--dry-run", action="store_true", help="check the arguments, exit")
    parser.add_argument(
        "--smoke-test", action="store_true", help="plan sdxl on 8 x 80 GB and 1 x 24 GB"
    )
    return parser


def render(arch: str, gpus: int, gpu_memory: float, top: int, assistants) -> str:
    fits = plan(arch, gpus, gpu_memory, assistants)
    head = f"{arch} on {gpus} x {gpu_memory:g} GiB ({HEADROOM_GIB:g} GiB kept free per GPU):"
    if not fits:
        need, s = smallest(arch, gpus)
        return (
            f"{head} nothing fits. The smallest setup needs {need:.1f} GiB per GPU "
            f"({s.strategy}, {s.assistant} assistant, batch {s.batch}"
            f"{', CPU offload' if s.offload else ''}); add GPUs or memory."
        )
    lines = [
        head,
        "| # | img/s per GPU | img/s total | GiB per GPU | strategy | assistant | batch/GPU | "
        "ckpt | chunk | VAE | offload |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (speed, peak, s) in enumerate(fits[:top], 1):
        lines.append(
            f"| {i} | {speed:.2f} | {speed * gpus:.2f} | {peak:.1f} | {s.strategy} | "
            f"{s.assistant} | {s.batch} | {'yes' if s.checkpointing else 'no'} | "
            f"{'1' if s.chunk else 'off'} | {'fp32' if s.vae_fp32 else 'bf16'} | "
            f"{'yes' if s.offload else 'no'} |"
        )
    lines.append("flags, best first:")
    lines += [f"  {i}. {s.flags()}" for i, (_, _, s) in enumerate(fits[:top], 1)]
    lines.append(
        "(Best of each strategy / assistant / offload / checkpointing. Speeds are H200-class "
        f"(measured there); FSDP traffic at an assumed {BUS_GBPS:g} GB/s, {OVERLAP:.0%} "
        "hidden; chunking, an fp32 VAE, CPU offload and the LoRA assistant's speed are "
        "assumed, not measured.)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args))


def run(args: argparse.Namespace) -> int:
    if args.world not in ARCHES:
        print(f"--world: got {args.world!r}; allowed: {', '.join(ARCHES)}", file=sys.stderr)
        return 2
    if args.gpus < 1 or args.gpu_memory <= HEADROOM_GIB or args.top < 1:
        print("--gpus and --top: at least 1; --gpu-memory: above 2 GiB", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"would plan {args.world} on {args.gpus} x {args.gpu_memory:g} GiB")
        return 0
    assistants = (args.assistant,) if args.assistant else ("copy", "lora")
    if args.smoke_test:
        for gpus, memory in ((8, 80.0), (1, 24.0)):
            print(render("sdxl", gpus, memory, 3, assistants))
        return 0
    if args.check:
        print(check_report(args.check))
        return 0
    if args.calibration:
        print(calibration_report())
    print(render(args.world, args.gpus, args.gpu_memory, args.top, assistants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
