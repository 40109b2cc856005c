"""The paper's Table 1 measured: every model it names, evaluated on one harness, beside the
paper's own row.

    python -m analysis.table1 --models-dir /models --device cuda \\
        --benchmark parti:1632 --benchmark coco:30000 \\
        --prompts parti=PartiPrompts.tsv --prompts coco=coco2014_val_30k_captions.txt

finds under ``--models-dir`` each model the paper's Table 1 names (its folder names in
``distar/config/pipelines.py``; one line for each one not there), evaluates each with
``python -m distar.cli.evaluate --pipeline`` (its model card's settings; every flag this command
does not know goes to each evaluation: benchmarks, prompts, weights, device, batch size, a
smoke run's ``--resolution`` / ``--steps``), one MLflow run each, then builds Table 1 from the
evaluation runs of the experiment. ``--dry-run`` prints the plan and the planner's estimate of
each model's GPU memory and time. Without ``--models-dir`` it builds the table from the runs
already there.

Each measured cell is the mean over prompts ± half its percentile-bootstrap 95 % interval: the
models are fixed released weights, so the only sample is the prompts' (no training seeds), and
comparisons between them are checkpoint-level (same prompts, same noise per prompt).
"""

from __future__ import annotations

import argparse
import gc
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.paper_tables import COLUMNS, FID_NOTE, markdown
from analysis.runs import cell, check_store
from distar.config import paper
from distar.config.pipelines import MODEL_CARDS, ModelCard, PipelineConfig
from distar.config.tree import ConfigError
from distar.evaluation.preflight import active_requests
from distar.track import tracking
from distar.track.tracking import EVALUATED_TAG, LABEL_TAG, TrackingStoreError, read_table
from distar.util.refusals import Outputs, check_writable_dir, refusing
from distar.worlds.cost_model import inference_gib, inference_seconds
from distar.worlds.footprints import ARCHES

BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
NOTES = (
    "Cells: mean over prompts ± half the percentile-bootstrap 95 % interval of one evaluation "
    "run. Released models are fixed weights: the interval is the prompt sample's, and any "
    "comparison between two rows is checkpoint-level (the same prompts and the same noise per "
    "prompt; nothing about how another training run would land).",
    "infer_sec_per_10: ours measured warm and synchronised on the device named beside it, at the "
    "evaluation's batch size; the paper's on a GPU it does not name.",
    FID_NOTE,
)


@dataclass(frozen=True)
class Found:
    card: ModelCard
    pipeline: Path
    unet: Path | None  # a UNet sampled on the base card's pipeline


def find_models(models_dir: Path) -> tuple[list[Found], list[str]]:
    """The Table 1 models under ``models_dir``, and one line for each one not there."""
    found, missing = [], []

    def folder(card: ModelCard) -> Path | None:
        return next((models_dir / f for f in card.folders if (models_dir / f).exists()), None)

    for card in MODEL_CARDS.values():
        where = folder(card)
        if where is None:
            missing.append(f"{card.name}: not found (looked for {', '.join(card.folders)})")
            continue
        base = folder(MODEL_CARDS[card.base]) if card.base else where
        if base is None:
            missing.append(f"{card.name}: found {where}, but not its base {card.base}")
            continue
        found.append(Found(card, base, where if card.base else None))
    known = {c.name for c in MODEL_CARDS.values()}
    for model in paper.TABLE1_MODELS:
        if model.name not in known:
            missing.append(f"{model.name}: no released weights known; only its paper row")
    return found, missing


def evaluate_argv(model: Found, passed: list[str], args: argparse.Namespace) -> list[str]:
    argv = ["--pipeline", str(model.pipeline), "--model", model.card.name]
    argv += ["--unet", str(model.unet)] if model.unet else []
    where = ["--tracking-uri", args.tracking_uri, "--experiment", args.experiment]
    return [*argv, *where, "--run-name", model.card.name, *passed]


def plan_line(model: Found, passed: list[str], args: argparse.Namespace) -> str:
    """The model's resolved settings and the planner's estimate of memory and time."""
    from distar.cli.evaluate import build_parser, resolve_job

    job = resolve_job(build_parser().parse_args(evaluate_argv(model, passed, args)))
    s = PipelineConfig.from_flat(job.source.pipeline)
    calls = s.calls_per_image()
    images = sum(int(n) for k, n in images_per_benchmark(job).items())
    batch, arch = job.eval.batch_size, ARCHES[model.card.arch].name
    gib = inference_gib(arch, BYTES[s.dtype], batch, s.resolution)
    per10 = inference_seconds(arch, calls, 10) * (s.resolution / 1024) ** 2
    total = per10 * images / 10
    spent = f"{total / 3600:.1f} GPU-h" if total >= 3600 else f"{total / 60:.1f} GPU-min"
    unet = f" + {model.unet}" if model.unet else ""
    return (
        f"{model.card.name}: {model.pipeline}{unet}\n"
        f"    {s.steps} steps, {calls} network calls per image, guidance {s.guidance:g}, "
        f"{s.scheduler} scheduler, {s.resolution} px, {s.dtype}\n"
        f"    planner's estimate for the real-size {arch}: {gib:.1f} GiB at batch {batch}, "
        f"{per10:.2f} s per 10 images, {spent} for "
        f"{images} images (times on the paper's GPU: fitted on its Table 1)"
    )


def images_per_benchmark(job) -> dict[str, int]:
    """Images per benchmark of an evaluation job (a benchmark without a count: its file's)."""
    from distar.evaluation.sources import benchmark_prompts

    per = job.eval.images_per_prompt
    return {
        r.benchmark: per * (r.n or len(benchmark_prompts(job.eval, r).prompts))
        for r in active_requests(job.eval)
    }


def evaluate_all(found: list[Found], passed: list[str], args: argparse.Namespace) -> list[str]:
    """Each model through ``distar.cli.evaluate`` in turn; the names of those that failed."""
    from distar.cli import evaluate

    failed = []
    for i, model in enumerate(found, 1):
        print(f"\n# [{i}/{len(found)}] {model.card.name}", flush=True)
        if evaluate.main(evaluate_argv(model, passed, args)) != 0:
            failed.append(model.card.name)
        gc.collect()  # the last model's weights go before the next one loads
        release_gpu_cache()
    return failed


def release_gpu_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluation_runs(uri: str, experiment: str) -> pd.DataFrame:
    """The released-model evaluation runs of the experiment (newest first)."""
    found = tracking.client(uri).get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--experiment: no experiment {experiment!r} at {uri}")
    runs = tracking.runs_frame(uri, [found.experiment_id], f"tags.`{EVALUATED_TAG}` = 'pipeline'")
    if runs.empty:
        raise ConfigError(f"--experiment: no model evaluation runs in {experiment!r} at {uri}")
    return runs.sort_values("start_time", ascending=False)


def measured_cells(client, run: pd.Series, bench: str) -> dict[str, object]:
    """One finished run's cells on one benchmark: each metric ± its interval, timing, settings."""
    bounds = read_table(client, run["run_id"], f"eval/{bench}_ci95.json")
    half = (
        {}
        if bounds is None
        else dict(
            zip(bounds["metric"], (bounds["ci95_high"] - bounds["ci95_low"]) / 2, strict=True)
        )
    )
    rec: dict[str, object] = {}
    for m in COLUMNS:
        key = f"{bench}/{m}"
        mean = run.get(f"metrics.{key}", math.nan)
        rec[m] = cell(mean, half.get(key, math.nan)) if pd.notna(mean) else None
    seconds = run.get("metrics.infer_sec_per_10", math.nan)
    rec["infer_sec_per_10"] = f"{seconds:.3g}" if pd.notna(seconds) else None
    rec["device"] = run.get("params.timing.device")
    rec["settings"] = settings_text(run)
    return rec


def settings_text(run: pd.Series) -> str:
    p = {k: run.get(f"params.pipeline.{k}") for k in ("steps", "guidance", "scheduler", "dtype")}
    res = run.get("params.pipeline.resolution")
    return f"{p['steps']} steps, g {p['guidance']}, {p['scheduler']}, {res} px, {p['dtype']}"


def table1(runs: pd.DataFrame, client) -> pd.DataFrame:
    """Every paper model (in the paper's order), then every other evaluated label: our newest
    finished run's cells beside the paper's, on Parti and COCO."""
    labels = list(dict.fromkeys(runs[f"tags.{LABEL_TAG}"].dropna()))
    order = [m.name for m in paper.TABLE1_MODELS]
    rows = []
    for bench in ("parti", "coco"):
        for name in order + [label for label in labels if label not in order]:
            ours = runs[runs[f"tags.{LABEL_TAG}"] == name]
            done = ours[ours["status"] == "FINISHED"]
            published = paper.TABLE1.get((bench, name))
            model = next((m for m in paper.TABLE1_MODELS if m.name == name), None)
            rec: dict[str, object] = {"benchmark": bench, "model": name}
            if len(done):
                rec["measured"] = "yes"
                rec.update(measured_cells(client, done.iloc[0], bench))
            else:
                rec["measured"] = f"failed ({len(ours)} runs)" if len(ours) else "not measured"
            for m, column in COLUMNS.items():
                if m != "fid":  # the paper's FID protocol is unstated (FID_NOTE)
                    rec[f"paper_{m}"] = None if published is None else getattr(published, column)
            rec["paper_steps"] = model.steps if model else None
            rec["paper_infer_sec_per_10"] = model.infer_sec_per_10 if model else None
            rows.append(rec)
    table = pd.DataFrame(rows)
    return table.drop(columns=[] if table["fid"].notna().any() else ["fid"])


def build(uri: str, experiment: str, out: Path) -> str:
    runs = evaluation_runs(uri, experiment)
    table = table1(runs, tracking.client(uri))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table1.csv", index=False)
    shown = table.rename(columns=lambda c: c.replace("paper_", "paper: ", 1))
    text = markdown(shown) + "\n\n" + "\n\n".join(NOTES)
    (out / "table1.md").write_text(text + "\n")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.table1",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--models-dir", type=Path, help="evaluate the Table 1 models found here first")
    p.add_argument("--tracking-uri", default="sqlite:///runs/table1/mlflow.db")
    p.add_argument("--experiment", default="distar-table1")
    p.add_argument("--out", type=Path, default=Path("runs/table1"))
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimates, exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args, passed = build_parser().parse_known_args(argv)

    def run(outputs: Outputs) -> int:
        check_writable_dir(args.out, "--out")
        failed: list[str] = []
        if args.models_dir:
            if not args.models_dir.is_dir():
                raise ConfigError(f"--models-dir: {args.models_dir} is not a folder")
            found, missing = find_models(args.models_dir)
            for line in missing:
                print(f"skip {line}")
            if args.dry_run:
                print("\n".join(plan_line(m, passed, args) for m in found))
                return 0
            failed = evaluate_all(found, passed, args)
        elif passed or args.dry_run:
            raise ConfigError(f"{(passed or ['--dry-run'])[0]}: only with --models-dir")
        check_store(args.tracking_uri)
        outputs.watch(args.out)
        print("\n## Table 1\n\n" + build(args.tracking_uri, args.experiment, args.out))
        if failed:
            print(f"\nfailed: {', '.join(failed)} (their rows say so)")
        return 1 if failed else 0

    return refusing(run, extra=(TrackingStoreError,))


if __name__ == "__main__":
    raise SystemExit(main())
