"""``python -m distar.evaluate``: score a one-step generator on Parti / COCO / HPSv2 prompts and
log per-prompt tables, summaries and image grids to MLflow.

    python -m distar.evaluate --tiny --benchmark parti:32 --benchmark coco:32 \\
        --prompts parti=../shared/data/PartiPrompts.tsv \\
        --prompts coco=../shared/data/coco2014_val_30k_captions.txt

``--tiny`` builds a random tiny generator and tiny random metric models in the real file
formats (offline; the numbers mean nothing, the pipeline is the real one). Without it, metric
weights come from ``--weights KEY=PATH`` or the environment variables in
``distar/evaluation/scorers.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distar.evaluation.plan import BENCHMARK_METRICS


@dataclass(frozen=True)
class BenchmarkRequest:
    name: str
    n: int | None  # None: all prompts
    metrics: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, metrics: list[str] | None) -> BenchmarkRequest:
        name, _, n = text.partition(":")
        if name not in BENCHMARK_METRICS:
            raise SystemExit(f"--benchmark: got {name!r}; allowed: {sorted(BENCHMARK_METRICS)}")
        if n and (not n.isdigit() or int(n) < 1):
            raise SystemExit(f"--benchmark {text}: the count after ':' must be a positive integer")
        chosen = tuple(m for m in BENCHMARK_METRICS[name] if metrics is None or m in metrics)
        return cls(name, int(n) if n else None, chosen)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distar.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", action="append", help="NAME[:N] (parti, coco, hps); repeatable")
    p.add_argument("--prompts", action="append", default=[], help="NAME=PATH of a prompt file")
    p.add_argument("--metrics", nargs="+", help="restrict to these metrics")
    p.add_argument("--weights", action="append", default=[], help="KEY=PATH of metric weights")
    p.add_argument("--subset", choices=["first", "stratified"], default="stratified")
    p.add_argument("--tiny", action="store_true", help="tiny random generator and metric models")
    p.add_argument("--generator-dir", help="the tiny generator's CLIP text encoder directory")
    p.add_argument(
        "--checkpoint",
        help="evaluate the generator of a distar run (its checkpoints/ or step_* directory) "
        "on a text-to-image world",
    )
    p.add_argument(
        "--world",
        help="evaluate this world preset's generator (e.g. sdxl with --set "
        "world.generator_init=DIR: a diffusers UNet directory or a state-dict file)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --world: a config field, e.g. world.reference=/models/sdxl-base",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        help="spread generation and scoring over N Ray actors (one model load each; "
        "RAY_ADDRESS joins a cluster); 0: this process",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tracking-uri", default="sqlite:///runs/eval/mlflow.db")
    p.add_argument("--experiment", default="distar-eval")
    p.add_argument("--run-name", default="evaluation")
    p.add_argument("--cache-dir", default=None, help="FID reference statistics cache")
    p.add_argument("--dry-run", action="store_true", help="print the resolved request, exit")
    p.add_argument("--smoke-test", action="store_true", help="--tiny, 8 Parti + 8 COCO prompts")
    return p


def key_values(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def resolve(args: argparse.Namespace) -> dict:
    from distar.evaluation.metric_base import METRICS

    if args.smoke_test:
        args.tiny, args.benchmark = True, args.benchmark or ["parti:8", "coco:8"]
        args.batch_size = min(args.batch_size, 8)
    if not args.benchmark:
        raise SystemExit("--benchmark: give at least one, e.g. --benchmark parti:32")
    import distar.evaluation.scorers  # noqa: F401

    unknown = [m for m in args.metrics or [] if m not in METRICS]
    if unknown:
        raise SystemExit(f"--metrics: unknown {unknown}; allowed: {', '.join(METRICS.names())}")
    for flag in ("samples_per_prompt", "batch_size"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag.replace('_', '-')}: must be >= 1")
    if not 0 <= args.ray_workers <= 4096:
        raise SystemExit("--ray-workers: must be in [0, 4096]")
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise SystemExit(f"--checkpoint: {args.checkpoint} does not exist")
    world = world_request(args)
    requests = [BenchmarkRequest.parse(b, args.metrics) for b in args.benchmark]
    if args.tiny:  # tiny models have no Inception / reference images: FID needs real files
        requests = [
            BenchmarkRequest(r.name, r.n, tuple(m for m in r.metrics if m != "fid"))
            for r in requests
        ]
    return {
        "benchmarks": [r.__dict__ for r in requests],
        "prompts": key_values(args.prompts, "--prompts"),
        "weights": key_values(args.weights, "--weights"),
        **{
            k: getattr(args, k)
            for k in (
                "tiny",
                "subset",
                "seed",
                "samples_per_prompt",
                "batch_size",
                "device",
                "tracking_uri",
                "experiment",
                "run_name",
                "checkpoint",
                "ray_workers",
            )
        },
        "world": world,
    }


def world_request(args: argparse.Namespace) -> dict | None:
    """``--world PRESET --set ...``: the flat config of the world whose generator to evaluate,
    validated now (a bad key or value fails before anything loads)."""
    from distar.config import Config, ConfigError, parse_override

    if not args.world:
        if args.overrides:
            raise SystemExit("--set: only with --world")
        return None
    if args.checkpoint:
        raise SystemExit("--world and --checkpoint: give one (a checkpoint brings its own world)")
    try:
        config = Config.for_world(args.world, dict(parse_override(o) for o in args.overrides))
    except ConfigError as error:
        raise SystemExit(f"config error: {error}") from None
    if not config.world.text_to_image:
        raise SystemExit(f"--world: {args.world!r} has no text-to-image generator")
    return {k: v for k, v in config.to_flat().items() if k.startswith("world.")}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    request = resolve(args)
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return
    from distar.evaluation.runner import run_evaluation

    with tempfile.TemporaryDirectory() as tmp:
        run_id, results = run_evaluation(request, Path(tmp), args.generator_dir, args.cache_dir)
    for result in results:
        print(f"\n## {result.benchmark}: {len(result.rows)} samples")
        for key, value in sorted(result.summary.items()):
            if key.count("/") == 1:
                print(f"  {key:40s} {value:10.4f}")
    print(
        f"\nMLflow run {run_id} in experiment {request['experiment']!r} at "
        f"{request['tracking_uri']}"
    )
