"""``python -m distar.cli.evaluate``: score a one-step generator on Parti / COCO / HPSv2 prompts and
log per-prompt tables, summaries and image grids to MLflow.

    python -m distar.cli.evaluate --tiny --benchmark parti:32 --benchmark coco:32 \\
        --prompts parti=../shared/data/PartiPrompts.tsv \\
        --prompts coco=../shared/data/coco2014_val_30k_captions.txt

``--pipeline DIR`` scores a diffusers pipeline folder (SDXL, SD1.5, SD3/3.5, FLUX) with its model
card's settings (``--model NAME``, else its family's flagship card; ``distar/config/pipelines.py``
says each and where it is published), each overridable and recorded; ``--unet`` puts a released
one-step UNet (DMD2, DI*, a ``distar.cli.export`` file) on its base pipeline:

    python -m distar.cli.evaluate --pipeline /models/stable-diffusion-xl-base-1.0 \
        --unet /models/DMD2 --model DMD2-SDXL --benchmark parti:1632 --device cuda

``--tiny`` builds a random tiny generator and tiny random metric models in the real file
formats (offline; the numbers mean nothing, the pipeline is the real one). Without it, metric
weights come from ``--weights KEY=PATH`` or the environment variables in
``distar/evaluation/scorers.py``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from distar.config import paper
from distar.config.benchmarks import FID_PROTOCOLS
from distar.config.keys import K
from distar.config.pipelines import MODEL_CARDS, PipelineConfig
from distar.config.tree import Config, ConfigError, EvalConfig, parse_override
from distar.evaluation.pipeline_generator import WHERE, pipeline_family, scheduler_class
from distar.evaluation.preflight import preflight
from distar.evaluation.sources import GeneratorSource
from distar.evaluation.standalone import EvalJob, run_evaluation
from distar.runtime.devices import check_cuda
from distar.t2i.parts import check_dir
from distar.track.tracking import EVALUATED_TAG, LABEL_TAG, TrackingStoreError
from distar.util.refusals import Outputs, check_name, refusing
from distar.worlds.builders import check_world

# the flag of each EvalConfig field this command sets: its errors name the flag
FLAGS = {
    K.eval.benchmarks: "--benchmark",
    K.eval.metrics: "--metrics",
    K.eval.prompts: "--prompts",
    K.eval.weights: "--weights",
    K.eval.images_per_prompt: "--samples-per-prompt",
    K.eval.batch_size: "--batch-size",
    K.eval.seed: "--seed",
    K.eval.fid_protocol: "--fid-protocol",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m distar.cli.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", action="append", help="NAME[:N] (parti, coco, hps); repeatable")
    p.add_argument("--prompts", action="append", default=[], help="NAME=PATH of a prompt file")
    p.add_argument("--metrics", nargs="+", help="restrict to these metrics")
    p.add_argument("--weights", action="append", default=[], help="KEY=PATH of metric weights")
    p.add_argument("--subset", choices=["first", "stratified"], default="stratified")
    p.add_argument(
        "--fid-protocol",
        default="",
        help="COCO FID as a published protocol measured it: "
        + ", ".join(FID_PROTOCOLS)
        + " (default: torchmetrics, not comparable to papers)",
    )
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
    add_pipeline_flags(p)
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
    p.add_argument("--run-name", help="default: --label's (a pipeline), else 'evaluation'")
    p.add_argument("--cache-dir", default=None, help="FID reference statistics cache")
    p.add_argument("--dry-run", action="store_true", help="print the resolved request, exit")
    p.add_argument("--smoke-test", action="store_true", help="--tiny, 8 Parti + 8 COCO prompts")
    return p


# the flag of each PipelineConfig field ("path": --pipeline)
PIPELINE_FLAGS = {
    "path": "--pipeline",
    "unet": "--unet",
    "model": "--model",
    "steps": "--steps",
    "guidance": "--guidance",
    "scheduler": "--scheduler",
    "timesteps": "--timesteps",
    "negative_prompt": "--negative-prompt",
    "resolution": "--resolution",
    "dtype": "--dtype",
    "max_sequence_length": "--max-sequence-length",
}


def add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a diffusers pipeline (unset settings: the model card's)")
    g.add_argument("--pipeline", help="a diffusers pipeline folder (local; offline)")
    g.add_argument("--unet", help="a UNet folder or state-dict file to sample on --pipeline")
    g.add_argument("--model", help="a model card: " + ", ".join(MODEL_CARDS))
    g.add_argument("--steps", type=int, default=0, help="sampling steps")
    g.add_argument("--guidance", type=float, default=-1.0, help="diffusers' guidance_scale")
    g.add_argument("--scheduler", default="", help="a diffusers *Scheduler, or 'folder'")
    g.add_argument("--timesteps", default="", help="custom timesteps, e.g. 399")
    g.add_argument("--negative-prompt", default="", help="one negative prompt for every image")
    g.add_argument("--resolution", type=int, default=0, help="image side in px")
    g.add_argument("--dtype", default="", help="bf16, fp16 or fp32")
    g.add_argument("--max-sequence-length", type=int, default=0, help="T5 tokens (SD3, FLUX)")
    g.add_argument("--label", help="the model's row name in Table 1 (default: --model, the folder)")


def pipeline_request(args: argparse.Namespace) -> dict:
    """``--pipeline DIR`` and its settings, validated and resolved against the model card now
    (the folder's pipeline class says its family): the flat ``pipeline.*`` dict the run records."""
    values = {k: getattr(args, f[2:].replace("-", "_")) for k, f in PIPELINE_FLAGS.items()}
    if not args.pipeline:
        given = [PIPELINE_FLAGS[k] for k, v in values.items() if v not in ("", 0, -1.0, None)]
        if given:
            raise ConfigError(f"{given[0]}: only with --pipeline")
        return {}
    if args.world or args.checkpoint:
        raise ConfigError("--pipeline: give one of --pipeline, --world, --checkpoint")
    try:
        config = PipelineConfig(**{k: v for k, v in values.items() if v is not None})
        path = check_dir(config.path, "--pipeline", ("model_index.json",), WHERE)
        resolved = config.resolved(pipeline_family(path))
        scheduler_class(resolved.scheduler)
        return resolved.to_flat()
    except ConfigError as error:
        raise flag_named(error, {f"pipeline.{k}": f for k, f in PIPELINE_FLAGS.items()}) from None


def flag_named(error: ConfigError, flags: dict[str, str]) -> ConfigError:
    """The error with its config field replaced by the flag that sets it."""
    message = str(error)
    field = message.partition(":")[0]
    return ConfigError(flags.get(field, field) + message[len(field) :])


def run_tags(args: argparse.Namespace, pipeline: dict) -> dict[str, str]:
    """A model evaluation's row in Table 1: its label, and the paper's model when a card
    names it (what ``analysis.table1`` reads back)."""
    if not pipeline:
        return {}
    model = pipeline["pipeline.model"]
    label = args.label or model or Path(pipeline["pipeline.unet"] or pipeline["pipeline.path"]).name
    return {EVALUATED_TAG: "pipeline", LABEL_TAG: label, **({paper.METHOD: model} if model else {})}


def resolve_job(args: argparse.Namespace) -> EvalJob:
    """The flags as a typed job: an :class:`EvalConfig` (validated; errors name the flag) and
    the generator, device and tracking settings around it. A bad flag raises ConfigError."""
    if args.smoke_test:
        args.tiny, args.benchmark = True, args.benchmark or ["parti:8", "coco:8"]
        args.batch_size = min(args.batch_size, 8)
    if not args.benchmark:
        raise ConfigError("--benchmark: give at least one, e.g. --benchmark parti:32")
    if not 0 <= args.ray_workers <= 4096:
        raise ConfigError("--ray-workers: must be in [0, 4096]")
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise ConfigError(f"--checkpoint: {args.checkpoint} does not exist")
    check_name(args.experiment, "--experiment")
    world = world_request(args) or {}
    pipeline = pipeline_request(args)
    tags = run_tags(args, pipeline)
    args.run_name = args.run_name or tags.get(LABEL_TAG, "evaluation")
    check_name(args.run_name, "--run-name")
    source = GeneratorSource(
        args.checkpoint or "", world, pipeline, args.generator_dir or "", args.seed
    )
    return EvalJob(
        eval_config(args),
        source,
        args.device,
        args.ray_workers,
        args.tracking_uri,
        args.experiment,
        args.run_name,
        args.cache_dir,
        tags,
    )


def eval_config(args: argparse.Namespace) -> EvalConfig:
    try:
        return EvalConfig(
            benchmarks=",".join(args.benchmark),
            metrics=",".join(args.metrics or []),
            prompts=",".join(args.prompts),
            weights=",".join(args.weights),
            subset=args.subset,
            tiny_metrics=args.tiny,
            seed=args.seed,
            images_per_prompt=args.samples_per_prompt,
            batch_size=args.batch_size,
            fid_protocol=args.fid_protocol,
        )
    except ConfigError as error:
        raise flag_named(error, FLAGS) from None


def world_request(args: argparse.Namespace) -> dict | None:
    """``--world PRESET --set ...``: the flat config of the world whose generator to evaluate,
    validated now (a bad key or value fails before anything loads)."""
    if not args.world:
        if args.overrides:
            raise ConfigError("--set: only with --world")
        return None
    if args.checkpoint:
        raise ConfigError("--world and --checkpoint: give one (a checkpoint brings its own world)")
    config = Config.for_world(args.world, dict(parse_override(o) for o in args.overrides))
    if not config.world.text_to_image:
        raise ConfigError(f"--world: {args.world!r} has no text-to-image generator")
    return {k: v for k, v in config.to_flat().items() if k.startswith("world.")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=(TrackingStoreError,))


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    job = resolve_job(args)
    if args.dry_run:
        print(job.to_json())
        return 0
    # every file, before a model loads: the device, the generator's world, prompts and weights
    check_cuda(args.device, "--device", "'cpu'")
    if job.source.world:
        check_world(Config.from_flat(job.source.world))
    preflight(job.eval)
    with tempfile.TemporaryDirectory() as tmp:
        run_id, results = run_evaluation(job, Path(tmp))
    for result in results:
        print(f"\n## {result.benchmark}: {len(result.rows)} samples")
        for key, value in sorted(result.summary.items()):
            if key.count("/") == 1:
                print(f"  {key:40s} {value:10.4f}")
    print(f"\nMLflow run {run_id} in experiment {job.experiment!r} at {job.tracking_uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
