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
    from distar.evaluation.generators import GENERATORS
    from distar.evaluation.tiny import tiny_text_encoder

    clip_dir = generator_dir or tiny_text_encoder(workdir / "generator_text", request["seed"] + 1)
    return GENERATORS.get("tiny")(clip_dir, request["seed"]).to(request["device"])


def run_evaluation(
    request: dict[str, Any], workdir: Path, generator_dir: str | None, cache_dir: str | None
) -> tuple[str, list[BenchmarkResult]]:
    from mlflow.tracking import MlflowClient

    from distar.evaluation.tiny import tiny_metric_paths
    from distar.evaluation.tracking import local_artifact_root, log_benchmark
    from distar.sweep.tracking import ensure_experiment, log_params

    paths = dict(request["weights"])
    if request["tiny"]:
        paths = {**tiny_metric_paths(workdir / "metrics"), **paths}
    options = MetricOptions(paths, request["device"], cache_dir)
    metrics = build_metrics(request, options)
    generator = build_generator(request, workdir, generator_dir)
    client = MlflowClient(request["tracking_uri"])
    experiment_id = ensure_experiment(
        client, request["experiment"], local_artifact_root(request["tracking_uri"])
    )
    run = client.create_run(experiment_id, run_name=request["run_name"])
    log_params(client, run.info.run_id, flat_request(request))
    results = []
    try:
        for bench in request["benchmarks"]:
            prompts = load_prompts(
                bench["name"],
                bench["n"],
                request["prompts"].get(bench["name"]),
                request["subset"],
                request["seed"],
            )
            chosen = {m: metrics[m] for m in bench["metrics"]}
            result = evaluate(
                generator,
                prompts,
                chosen,
                seed=request["seed"],
                samples_per_prompt=request["samples_per_prompt"],
                batch_size=request["batch_size"],
                device=request["device"],
            )
            log_benchmark(client, run.info.run_id, result)
            results.append(result)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id, results


def flat_request(request: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in request.items() if not isinstance(v, dict | list)}
    for b in request["benchmarks"]:
        flat[f"benchmark.{b['name']}.n"] = b["n"] if b["n"] is not None else "all"
        flat[f"benchmark.{b['name']}.metrics"] = ",".join(b["metrics"])
    flat.update({f"prompts.{k}": v for k, v in request["prompts"].items()})
    flat.update({f"weights.{k}": v for k, v in request["weights"].items()})
    return flat
