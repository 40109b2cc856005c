"""``python -m distar.cli.plan --world sdxl --gpus 8 --gpu-memory 80``: which training setups of a
text-to-image world (sd15, sdxl, sd35, flux) fit your GPUs, best first, with predicted GiB and
images/s per GPU and the exact ``--set`` flags.

The memory model (GiB per GPU; :mod:`distar.worlds.cost_model`, byte counts in each world's
``footprint`` module):

    peak = max(start-up, step)
    start-up = 4 B x trained parameters + 2 B x reference network + frozen parts
    step = weights_and_adam + reference + frozen parts + fsdp_buffers + max(k * act(b), grads)

- start-up: every rank builds every network unsharded on its GPU (fp32 generator, fp32 copy
  assistant or LoRA adapters, bf16 reference; PickScore still fp32) before FSDP shards them,
  with CPU offload too (it applies only after sharding); no Adam state or gradient yet. Under
  DDP it is below the step's peak. A world that shards from the host (sd35, flux under FSDP)
  holds instead its shards and one unit unsharded (``cost_model.startup_gib``);
- weights_and_adam: 12 B per trained parameter (fp32 master + two fp32 Adam moments), / N
  under FSDP, on the host with CPU offload;
- reference: the bf16 UNet, / N under FSDP, plus beside a copy assistant its whole bf16 copy
  held through the generator step (a LoRA assistant's UNet *is* the reference, gathered unit by
  unit); frozen parts: text encoders, VAE (bf16 or fp32), PickScore, whole on every rank;
- fsdp_buffers: two units' gathered bf16 weights and, in the generator's backward, one unit's
  unsharded bf16 gradients and their fp32 copy for the reduce-scatter (10 B per parameter);
- act(b): the research note's per-image activation estimates (shared/research/sd-worlds.md
  §7.3) scaled by one factor k per checkpointing mode, fitted on the measured rows;
- grads: 4 B per generator parameter (the assistant is frozen in the generator step), / N
  under FSDP, on the host with offload; they grow as activations are freed, hence the max.

Validation: ``--calibration`` prints the in-sample fit and, apart, leave-one-out errors (k
refitted without each measured row, predicting it); the plan prints their summary and marks
every setup outside the measured rows (one GPU, DDP, copy assistant, no chunking or offload,
bf16 VAE, the measured batches) as extrapolated, saying why.

Step time: linear in the batch per architecture through the measured checkpointed rows, times a
measured no-checkpointing speed-up; FSDP adds half its traffic (:func:`collectives`: gathers and
reduce-scatters per step as the loop issues them, for the SD presets' one round on reused
samples and the exact gradient path) at an assumed bus bandwidth; DDP its gradient
all-reduce (exposed); CPU offload PCIe copies and a host Adam step. What is assumed rather than
measured is said in the output. A world without measured rows (sd35, flux) gets its memory from
shape estimates and no speed: its setups rank by batch, then memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

from distar.config.keys import K
from distar.config.sections import ConfigError
from distar.config.t2i import T2I_DEFAULTS
from distar.util.refusals import refusing
from distar.worlds.cost_model import (
    GIB,
    Setup,
    activation_units,
    basis,
    resident_gib,
    setup_of,
    shards,
    stale_gib,
    startup_gib,
)
from distar.worlds.cost_model import MeasuredRow as Row
from distar.worlds.footprints import ARCHES, MEASURED, OUT_OF_MEMORY

HEADROOM_GIB = 2.0  # CUDA context, allocator fragmentation
BUS_GBPS = 200.0  # assumed all-gather / reduce-scatter / all-reduce bus bandwidth (NVLink), GB/s
OVERLAP = 0.5  # assumed share of FSDP traffic hidden behind compute
PCIE_GBPS = 25.0  # assumed host <-> GPU copy bandwidth for CPU offload
HOST_ADAM_PARAMS_PER_S = 1e9  # assumed CPU Adam rate per rank
# step time without checkpointing / with, same batch: SD1.5 measured (README, batch 8); SDXL
# from gpu-step-floor.md's bf16 rows (ours ran out of memory without checkpointing)
NO_CKPT_SPEEDUP = {"sd15": 1033 / 1676, "sdxl": 1391 / 2589}
ASSUMED_COSTS = {"chunk": 1.05, "vae_fp32": 1.10}  # not measured: +5 %, +10 % step time
BATCHES = (1, 2, 4, 8, 16, 32, 64)
EXTRAPOLATION = 4  # batches up to 4 x the largest measured one of the world
UNMEASURED_BATCHES = 8  # the largest batch tried for a world without measured rows
# the text-to-image presets' loop: one assistant round a step, on the generator step's samples
ROUNDS = T2I_DEFAULTS[K.optim.assistant_rounds]
REUSE = T2I_DEFAULTS[K.optim.reuse_generator_samples]


def calibrate(rows: tuple[Row, ...] | None = None) -> dict[bool, float]:
    """k per checkpointing mode: least squares of measured peak - resident - stale gradients
    on activation_units over ``rows`` (default: every measured row; through the origin); a
    mode without rows gets none."""
    rows = MEASURED if rows is None else rows
    k = {}
    for mode in (True, False):
        fit = [r for r in rows if r.checkpointing == mode]
        xs = [activation_units(setup_of(r)) for r in fit]
        ys = [r.peak_gib - resident_gib(setup_of(r)) - stale_gib(r) for r in fit]
        if fit:
            k[mode] = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    return k


def step_gib(s: Setup, k: dict[bool, float]) -> float:
    """The generator step's peak (what a benchmark that resets the peak after warm-up sees)."""
    gradients = 0.0 if s.offload else 4 * s.trained()[0] / shards(s) / GIB
    return resident_gib(s) + max(k[s.checkpointing] * activation_units(s), gradients)


def peak_gib(s: Setup, k: dict[bool, float]) -> float:
    """The run's peak per GPU: the start-up's or the step's, whichever is larger."""
    return max(startup_gib(s), step_gib(s, k))


def leave_one_out() -> list[tuple[Row, float, float | None]]:
    """(row, in-sample error, leave-one-out error) per measured row: the latter with k refitted
    without the row; None where the row is the only one of its checkpointing mode."""
    k = calibrate()
    out = []
    for i, r in enumerate(MEASURED):
        rest = MEASURED[:i] + MEASURED[i + 1 :]
        k_rest = calibrate(rest)
        held = relative_error(r, k_rest) if r.checkpointing in k_rest else None
        out.append((r, relative_error(r, k), held))
    return out


def relative_error(r: Row, k: dict[bool, float]) -> float:
    return (step_gib(setup_of(r), k) + stale_gib(r) - r.peak_gib) / r.peak_gib


def validation_line() -> str:
    errors = leave_one_out()
    held = [abs(e) for _, _, e in errors if e is not None]
    return (
        f"memory model, leave-one-out error on the {len(errors)} measured rows: max |e| = "
        f"{max(held):.1%}, mean |e| = {sum(held) / len(held):.1%} on the {len(held)} "
        f"checkpointed ones (k refitted without each; in-sample max "
        f"{max(abs(e) for _, e, _ in errors):.1%}); n/a for the {len(errors) - len(held)} "
        "non-checkpointed row, the only one of its mode. Step times: no leave-one-out (two "
        "measured rows per world fix each line)."
    )


def collectives(
    s: Setup, rounds: int = 1, reuse: bool = True, exact: bool = True
) -> dict[str, tuple[int, int]]:
    """(all-gathers, reduce-scatters) per step of each sharded network, in whole-network
    equivalents (every FSDP unit gathered once = 1), as the loop issues them under FSDP: ``rounds``
    assistant rounds, the first on the generator step's samples when ``reuse``, the gradient
    path ``exact`` (through the assistant's and reference's inputs) or detached. {} under DDP.

    - generator: forward + backward, plus a no-grad forward per round on fresh samples; one
      reduce-scatter;
    - assistant: frozen in the generator step, gathered per chunk (forward, + backward to its
      input when exact), no reduce-scatter there; forward + backward and one reduce-scatter per
      round. A LoRA assistant's UNet is the reference too: twice the generator step's gathers;
    - reference (beside a copy assistant): held gathered through the generator step: 1.

    A logging step (one in ``train.log_every``) adds one backward per chunk and loss term
    through the assistant (and the shared UNet's reference) for the per-term gradient norms;
    the count here is the plain step's, which tests/test_fsdp.py counts in a 2-rank run."""
    if s.strategy != "fsdp":
        return {}
    chunks = s.batch if s.chunk else 1
    per_chunk = (2 if exact else 1) * chunks
    counts = {"generator": (2 + rounds - int(reuse), 1)}
    if s.assistant == "lora":
        counts["assistant"] = (2 * per_chunk + 2 * rounds, rounds)
    else:
        counts["assistant"] = (per_chunk + 2 * rounds, rounds)
        counts["reference"] = (1, 0)
    return counts


def fsdp_ms(s: Setup) -> float:
    """Exposed FSDP traffic of the SD presets' step: all-gathers move the whole UNet in bf16
    (a LoRA assistant's with its adapters), reduce-scatters the trained parameters in fp32;
    (N-1)/N of each over the bus, ``OVERLAP`` of it hidden."""
    if s.strategy != "fsdp" or s.gpus == 1:
        return 0.0
    u = ARCHES[s.arch].network
    gen, assistant = s.trained()
    lora = assistant if s.assistant == "lora" else 0.0
    sizes = {"generator": (u, gen), "assistant": (u + lora, assistant), "reference": (u, 0.0)}
    traffic = sum(
        2 * gathers * sizes[name][0] + 4 * scatters * sizes[name][1]
        for name, (gathers, scatters) in collectives(s, ROUNDS, REUSE).items()
    )
    return 1000 * (1 - OVERLAP) * traffic * (s.gpus - 1) / s.gpus / (BUS_GBPS * 1e9)


def ddp_ms(s: Setup) -> float:
    """DDP's fp32 gradient all-reduce (ring: 2 (N-1)/N of the bytes): the generator's once,
    the assistant's each round, after each backward (not overlapped)."""
    if s.strategy != "ddp" or s.gpus == 1:
        return 0.0
    gen, assistant = s.trained()
    traffic = 4 * (gen + ROUNDS * assistant) * 2 * (s.gpus - 1) / s.gpus
    return 1000 * traffic / (BUS_GBPS * 1e9)


def offload_ms(s: Setup) -> float:
    if not s.offload:
        return 0.0
    local = sum(s.trained()) / shards(s)
    copies = 8 * local / (PCIE_GBPS * 1e9)  # fp32 gradients down, fp32 weights up
    return 1000 * (copies + local / HOST_ADAM_PARAMS_PER_S)


def step_ms(s: Setup) -> float:
    """Milliseconds per step; NaN for a world without measured rows (no speed to scale)."""
    rows = [r for r in MEASURED if r.arch == s.arch and r.checkpointing]
    if not rows:
        return math.nan
    (b1, t1), (b2, t2) = [(r.batch, r.step_ms) for r in rows[:2]]
    slope = (t2 - t1) / (b2 - b1)
    t = t1 + slope * (s.batch - b1)
    if not s.checkpointing:
        t *= NO_CKPT_SPEEDUP[s.arch]
    t *= ASSUMED_COSTS["chunk"] if s.chunk else 1.0
    t *= ASSUMED_COSTS["vae_fp32"] if s.vae_fp32 else 1.0
    return t + fsdp_ms(s) + ddp_ms(s) + offload_ms(s)


def candidates(arch: str, gpus: int, assistants: tuple[str, ...], ema: bool = False):
    strategies = ("ddp", "fsdp") if gpus > 1 else ("ddp", "fsdp-offload")
    measured = [r.batch for r in MEASURED if r.arch == arch]
    largest = EXTRAPOLATION * max(measured) if measured else UNMEASURED_BATCHES
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
        yield Setup(arch, gpus, strategy, assistant, batch, ckpt, chunk, vae32, offload, ema=ema)


def assumptions(s: Setup) -> int:
    """How many unmeasured costs a setup's speed rests on."""
    return s.chunk + s.vae_fp32 + s.offload + (s.assistant == "lora") + (s.strategy == "fsdp")


def plan(
    arch: str, gpus: int, gpu_memory: float, assistants=("copy", "lora"), ema: bool = False
) -> list[tuple]:
    """The setups whose peak (start-up or step) fits ``gpu_memory`` GiB (less headroom), as
    (images/s per GPU, peak GiB, setup), best first: most images/s, then least memory; one
    setup per strategy, assistant, offload and checkpointing -- its fastest, where setups
    within 5 % of each other count as equal and fewer assumed costs, then less memory, win."""
    k = calibrate()
    rows = []
    for s in candidates(arch, gpus, assistants, ema):
        peak = peak_gib(s, k)
        if peak <= gpu_memory - HEADROOM_GIB:
            rows.append((s.batch / step_ms(s) * 1000, peak, s))
    rows.sort(key=lambda r: (-speed_class(r), assumptions(r[2]), r[1]))
    best: dict[tuple, tuple] = {}
    for row in rows:
        s = row[2]
        best.setdefault((s.strategy, s.assistant, s.offload, s.checkpointing), row)
    return sorted(best.values(), key=lambda r: (-speed_class(r), r[1]))


def speed_class(row: tuple) -> int:
    """Speeds within 5 % rank equal; without a measured speed, the batch per GPU ranks."""
    speed, _, s = row
    if math.isnan(speed):
        return s.batch
    return round(math.log(speed) / math.log(1.05))


def smallest(arch: str, gpus: int, ema: bool = False) -> tuple[float, Setup]:
    k = calibrate()
    setups = candidates(arch, gpus, ("copy", "lora"), ema)
    return min(((peak_gib(s, k), s) for s in setups), key=lambda r: r[0])


def calibration_report() -> str:
    """The fit on every measured row (in sample), then validation: each row predicted by k
    refitted without it, and the out-of-memory bound (never fitted on)."""
    k = calibrate()
    lines = [
        f"memory model: k = {k[True]:.3f} (checkpointed), {k[False]:.3f} (not); in sample, "
        "against the rows it is fitted on (one H200, fp32 masters, bf16 VAE, copy assistant):",
        "| world | batch | checkpointing | measured GiB | predicted GiB | error | measured ms |"
        " predicted ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in MEASURED:
        s = setup_of(r)
        got = step_gib(s, k) + stale_gib(r)
        lines.append(
            f"| {r.arch} | {r.batch} | {'yes' if r.checkpointing else 'no'} | {r.peak_gib:.1f} | "
            f"{got:.1f} | {(got - r.peak_gib) / r.peak_gib:+.1%} | {r.step_ms:.0f} | "
            f"{step_ms(s):.0f} |"
        )
    lines += [
        "validation, leave-one-out (k refitted without the row, then predicting it):",
        "| world | batch | checkpointing | measured GiB | in-sample error | leave-one-out error |",
        "|---|---|---|---|---|---|",
    ]
    for r, inside, held in leave_one_out():
        held_text = f"{held:+.1%}" if held is not None else "n/a (the only row of its mode)"
        lines.append(
            f"| {r.arch} | {r.batch} | {'yes' if r.checkpointing else 'no'} | {r.peak_gib:.1f} | "
            f"{inside:+.1%} | {held_text} |"
        )
    for r in OUT_OF_MEMORY:
        got = step_gib(setup_of(r), k) + stale_gib(r)
        verdict = "consistent" if got > r.peak_gib else "INCONSISTENT"
        lines.append(
            f"out of memory at {r.peak_gib} GiB ({r.arch}, batch {r.batch}, no checkpointing; "
            f"not fitted on): predicted {got:.1f} GiB, {verdict}"
        )
    lines.append(
        "Step times interpolate the two checkpointed rows of each world and scale by a speed-up "
        "taken from the one non-checkpointed row: 0 error on those rows by construction, and no "
        "leave-one-out is possible (one row left cannot fix a line)."
    )
    return "\n".join(lines)


def check_report(path: str) -> str:
    """The model against rows ``benchmarks/sd_step.py --json`` wrote (one GPU, fp32 masters):
    the step's peak, as the benchmark resets the peak after its warm-up steps."""
    k = calibrate()
    lines = [
        "| row | measured GiB | predicted GiB (step) | error | start-up GiB measured / "
        "predicted | measured img/s | predicted img/s |",
        "|---|---|---|---|---|---|---|",
    ]
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
            offload=bool(r.get("offload")),
            lora_rank=r["lora_rank"] or 64,
        )
        got, want = step_gib(s, k), r["peak_gib"]
        start = r.get("startup_gib")
        start_text = "n/a" if start is None else f"{start:.1f}"
        lines.append(
            f"| {s.arch} b{s.batch} ckpt={s.checkpointing} {s.strategy} {s.assistant}"
            f"{' chunk' * s.chunk}{' offload' * s.offload} | {want:.1f} | {got:.1f} | "
            f"{(got - want) / want:+.1%} | {start_text} / {startup_gib(s):.1f} | "
            f"{r['images_per_s']:.2f} | {s.batch / step_ms(s) * 1000:.2f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distar.cli.plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--world", default="sdxl", help="sd15, sdxl, sd35 or flux (default sdxl)")
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
    parser.add_argument(
        "--ema", action="store_true", help="with a generator EMA (train.ema): its fp32 shards too"
    )
    parser.add_argument("--dry-run", action="store_true", help="check the arguments, exit")
    parser.add_argument(
        "--smoke-test", action="store_true", help="plan sdxl on 8 x 80 GB and 1 x 24 GB"
    )
    return parser


def render(arch: str, gpus: int, gpu_memory: float, top: int, assistants, ema: bool = False) -> str:
    fits = plan(arch, gpus, gpu_memory, assistants, ema)
    head = f"{arch} on {gpus} x {gpu_memory:g} GiB ({HEADROOM_GIB:g} GiB kept free per GPU):"
    if not fits:
        need, s = smallest(arch, gpus, ema)
        return (
            f"{head} nothing fits. The smallest setup needs {need:.1f} GiB per GPU "
            f"({s.strategy}, {s.assistant} assistant, batch {s.batch}"
            f"{', CPU offload' if s.offload else ''}; {startup_gib(s):.1f} GiB at start-up); "
            "add GPUs or memory.\n" + validation_line()
        )
    k = calibrate()
    lines = [
        head,
        "| # | img/s per GPU | img/s total | GiB in the step | GiB at start-up | strategy | "
        "assistant | batch/GPU | ckpt | chunk | VAE | offload | basis |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (speed, _, s) in enumerate(fits[:top], 1):
        shown_speed = "n/a" if math.isnan(speed) else f"{speed:.2f}"
        total = "n/a" if math.isnan(speed) else f"{speed * gpus:.2f}"
        lines.append(
            f"| {i} | {shown_speed} | {total} | {step_gib(s, k):.1f} | "
            f"{startup_gib(s):.1f} | {s.strategy} | {s.assistant} | {s.batch} | "
            f"{'yes' if s.checkpointing else 'no'} | {'1' if s.chunk else 'off'} | "
            f"{'fp32' if s.vae_fp32 else 'bf16'} | {'yes' if s.offload else 'no'} | {basis(s)} |"
        )
    lines.append("flags, best first:")
    lines += [f"  {i}. {s.flags()}" for i, (_, _, s) in enumerate(fits[:top], 1)]
    shown = [s for _, _, s in fits[:top]]
    outside = sum(basis(s) != "measured" for s in shown)
    lines += [
        "(Best of each strategy / assistant / offload / checkpointing; a setup fits when both "
        "its start-up and its step do. Speeds are H200-class (measured there); FSDP and DDP "
        f"traffic at an assumed {BUS_GBPS:g} GB/s, {OVERLAP:.0%} of FSDP's hidden; chunking, "
        "an fp32 VAE, CPU offload and the LoRA assistant's speed are assumed, not measured. "
        f"{outside} of these {len(shown)} rows lie outside the measured rows (one GPU, DDP, "
        "copy assistant, no chunking or offload, bf16 VAE): extrapolated, not validated.)",
        validation_line(),
    ]
    if ARCHES[arch].estimated:
        lines.append(
            f"{arch}: no step measured yet -- {ARCHES[arch].estimated}; the calibration "
            "factor k is the SD rows'; no speed is predicted (rows rank by batch, then memory)."
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
    print(render(args.world, args.gpus, args.gpu_memory, args.top, assistants, args.ema))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
