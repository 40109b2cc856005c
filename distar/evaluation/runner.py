"""Build the generator and metrics of an evaluation request once, run every benchmark through
the harness, log everything into one MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distar import prompts as prompt_sets
from distar.evaluation.harness import BenchmarkResult, evaluate
from distar.evaluation.metric_base import MetricOptions, build_metric


def load_prompts(name: str, n: int | None, path: str | None, subset: str, seed: int):
    full = prompt_sets.load(name, path)
    if n is None:
        return full
    return full.first(n) if subset == "first" else full.subset(n, seed)


def build_metrics(request: dict[str, Any], options: MetricOptions) -> dict[str, Any]:
    """Each metric once (models loaded once, moved to the device once), shared by benchmarks."""
    names = {m for b in request["benchmarks"] for m in b["metrics"]}
    return {name: build_metric(name, options) for name in sorted(names)}


def build_generator(request: dict[str, Any], workdir: Path, generator_dir: str | None):
    """The generator to evaluate: a trained one from a distar checkpoint of a text-to-image
    world (``request["checkpoint"]``), or the random tiny one."""
    if request.get("checkpoint"):
        return checkpoint_generator(Path(request["checkpoint"]), request["device"])
    if request.get("world"):
        return world_generator(request["world"], request["device"])
    from distar.evaluation.generators import GENERATORS
    from distar.evaluation.tiny import tiny_text_encoder

    clip_dir = generator_dir or tiny_text_encoder(workdir / "generator_text", request["seed"] + 1)
    return GENERATORS.get("tiny")(clip_dir, request["seed"]).to(request["device"])


def checkpoint_generator(path: Path, device: str):
    """Rebuild the run's world from the checkpoint's config and load its trained generator."""
    import torch
    from safetensors.torch import load_file

    from distar.checkpoint import checkpoint_config, load_trained_state, resolve_checkpoint
    from distar.worlds import build_world

    path = resolve_checkpoint(path)
    config = checkpoint_config(path)
    world = build_world(config.world, torch.device(device))
    if not hasattr(world, "eval_generator"):
        raise ValueError(f"{path}: the {config.world.name!r} world has no text-to-image generator")
    file = path / "generator.safetensors"
    load_trained_state(world.generator, load_file(str(file)), str(file))
    return world.eval_generator()


def world_generator(world_flat: dict[str, Any], device: str):
    """A world's generator as configured (``world.generator_init``: a diffusers UNet directory
    or a state-dict file; empty: the reference UNet)."""
    import torch

    from distar.config import Config
    from distar.worlds import build_world

    world = build_world(Config.from_flat(world_flat).world, torch.device(device))
    return world.eval_generator()


def benchmark_prompts(request: dict[str, Any], bench: dict[str, Any]):
    path = request["prompts"].get(bench["name"])
    return load_prompts(bench["name"], bench["n"], path, request["subset"], request["seed"])


def evaluate_benchmarks(request, metrics, generator) -> list[BenchmarkResult]:
    """Every benchmark in this process."""
    results = []
    for bench in request["benchmarks"]:
        result = evaluate(
            generator,
            benchmark_prompts(request, bench),
            {m: metrics[m] for m in bench["metrics"]},
            seed=request["seed"],
            samples_per_prompt=request["samples_per_prompt"],
            batch_size=request["batch_size"],
            device=request["device"],
        )
        results.append(result)
    return results


def metric_options(request: dict[str, Any], cache_dir: str | None):
    paths = dict(request["weights"])
    if request["tiny"]:
        from distar.evaluation.tiny import cached_tiny_metric_paths

        # written once into $DISTAR_CACHE, not again by every run and every Ray actor
        paths = {**cached_tiny_metric_paths(), **paths}
    return MetricOptions(paths, request["device"], cache_dir)


def run_evaluation(
    request: dict[str, Any], workdir: Path, generator_dir: str | None, cache_dir: str | None
) -> tuple[str, list[BenchmarkResult]]:
    from mlflow.tracking import MlflowClient

    from distar.evaluation.tracking import local_artifact_root, log_benchmark
    from distar.sweep.tracking import ensure_experiment, log_params

    client = MlflowClient(request["tracking_uri"])
    experiment_id = ensure_experiment(
        client, request["experiment"], local_artifact_root(request["tracking_uri"])
    )
    run = client.create_run(experiment_id, run_name=request["run_name"])
    log_params(client, run.info.run_id, flat_request(request))
    try:
        if request.get("ray_workers", 0) > 0:
            from distar.evaluation.ray_eval import evaluate_on_ray

            results = evaluate_on_ray(request, workdir, generator_dir, cache_dir)
        else:
            metrics = build_metrics(request, metric_options(request, cache_dir))
            generator = build_generator(request, workdir, generator_dir)
            results = evaluate_benchmarks(request, metrics, generator)
        for result in results:
            log_benchmark(client, run.info.run_id, result)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id, results


def flat_request(request: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in request.items() if not isinstance(v, dict | list)}
    flat.update(request.get("world") or {})
    for b in request["benchmarks"]:
        flat[f"benchmark.{b['name']}.n"] = b["n"] if b["n"] is not None else "all"
        flat[f"benchmark.{b['name']}.metrics"] = ",".join(b["metrics"])
    flat.update({f"prompts.{k}": v for k, v in request["prompts"].items()})
    flat.update({f"weights.{k}": v for k, v in request["weights"].items()})
    return flat
