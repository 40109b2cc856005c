"""One evaluation outside training (``python -m distar.cli.evaluate``): build the generator and the
metrics once, run every benchmark through the harness (in this process or on Ray actors), time
the generator's inference per 10 images, log everything into one MLflow run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distar.config.keys import K
from distar.config.tree import EvalConfig
from distar.evaluation.harness import BenchmarkResult
from distar.evaluation.in_training import BenchmarkEvaluator
from distar.evaluation.inference_time import InferenceTime, time_generation
from distar.evaluation.mlflow_tables import log_benchmark
from distar.evaluation.preflight import active_requests
from distar.evaluation.ray_eval import evaluate_on_ray
from distar.evaluation.sources import GeneratorSource, build_generator, harness_options
from distar.track import tracking
from distar.track.tracking import ensure_experiment, local_artifact_root, log_metrics, log_params


@dataclass(frozen=True)
class EvalJob:
    """What ``python -m distar.cli.evaluate`` resolves its flags into: the typed evaluation config,
    the generator to score, where it runs and where it is recorded."""

    eval: EvalConfig
    source: GeneratorSource = field(default_factory=GeneratorSource)
    device: str = "cpu"
    ray_workers: int = 0  # 0: this process
    tracking_uri: str = "sqlite:///runs/eval/mlflow.db"
    experiment: str = "distar-eval"
    run_name: str = "evaluation"
    cache_dir: str | None = None  # FID reference statistics
    tags: dict[str, str] = field(default_factory=dict)  # a released model's Table 1 row

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, default=str)


def evaluate_here(job: EvalJob, workdir: Path) -> tuple[list[BenchmarkResult], InferenceTime]:
    """Every benchmark in this process: the training loop's evaluator on one generator; then
    its inference time on the first benchmark's prompts."""
    evaluator = BenchmarkEvaluator(job.eval, job.device, job.cache_dir or "", progress=True)
    generator = build_generator(job.source, job.device, workdir)
    results = evaluator.run(generator)
    first = evaluator.requests[0].benchmark
    options = harness_options(job.eval, job.device)
    return results, time_generation(generator, evaluator.prompt_sets[first], options)


def run_evaluation(job: EvalJob, workdir: Path) -> tuple[str, list[BenchmarkResult]]:
    client = tracking.client(job.tracking_uri)
    experiment_id = ensure_experiment(client, job.experiment, local_artifact_root(job.tracking_uri))
    run = client.create_run(experiment_id, run_name=job.run_name, tags=job.tags)
    log_params(client, run.info.run_id, job_params(job))
    try:
        if job.ray_workers > 0:
            args = (job.eval, job.source, job.device, job.ray_workers, job.cache_dir)
            results, timing = evaluate_on_ray(*args)
        else:
            results, timing = evaluate_here(job, workdir)
        for result in results:
            log_benchmark(client, run.info.run_id, result)
        log_params(client, run.info.run_id, timing.params())
        log_metrics(client, run.info.run_id, timing.metrics(), 0)
        print(f"inference: {timing.seconds_per_10:.3f} s per 10 images on {timing.device}")
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id, results


def job_params(job: EvalJob) -> dict[str, Any]:
    """The run's MLflow params: how it sampled, what it scored, where from."""
    cfg = job.eval
    flat: dict[str, Any] = {
        "tiny": cfg.tiny_metrics,
        "subset": cfg.subset,
        "seed": cfg.seed,
        K.eval.fid_protocol: cfg.fid_protocol,
        "samples_per_prompt": cfg.images_per_prompt,
        "batch_size": cfg.batch_size,
        "device": job.device,
        "tracking_uri": job.tracking_uri,
        "experiment": job.experiment,
        "run_name": job.run_name,
        "checkpoint": job.source.checkpoint or None,
        "ray_workers": job.ray_workers,
        **job.source.world,
        **job.source.pipeline,
    }
    for r in active_requests(cfg):
        flat[f"benchmark.{r.benchmark}.n"] = r.n if r.n is not None else "all"
        flat[f"benchmark.{r.benchmark}.metrics"] = ",".join(r.metrics)
    flat.update({f"prompts.{k}": v for k, v in cfg.prompt_paths().items()})
    flat.update({f"weights.{k}": v for k, v in cfg.weight_paths().items()})
    return flat
