"""Evaluation spread over a Ray cluster: one actor per worker loads the generator and the metric
models once, generates and scores its share of each benchmark (every N-th sample; each sample's
noise is its own, so shares are independent), and the driver merges the shares in the one-process
order -- the same rows and summaries as one process; FID from the exact sum of the shares'
feature statistics. COCO-30k on N GPUs takes ~1/N of one."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from distar.config.tree import EvalConfig
from distar.evaluation.harness import BenchmarkResult, Shard, finish, score_shard
from distar.evaluation.inference_time import InferenceTime, time_generation
from distar.evaluation.preflight import active_requests
from distar.evaluation.sources import (
    GeneratorSource,
    benchmark_prompts,
    build_generator,
    build_metrics,
    harness_options,
    metric_options,
)
from distar.runtime.local_ray import start_ray

LAST_SCORING_SECONDS = float("nan")


class EvalWorker:
    """What one Ray actor holds: the generator and the metrics, built once."""

    def __init__(
        self, cfg: EvalConfig, source: GeneratorSource, device: str, cache_dir: str | None
    ) -> None:
        self.cfg, self.device = cfg, device
        self.requests = active_requests(cfg)
        self.metrics = build_metrics(self.requests, metric_options(cfg, device, cache_dir))
        workdir = Path(tempfile.mkdtemp(prefix="distar-eval-"))
        self.generator = build_generator(source, device, workdir)

    def ready(self) -> bool:
        return True

    def shard(self, bench_index: int, rank: int, size: int) -> Shard:
        request = self.requests[bench_index]
        return score_shard(
            self.generator,
            benchmark_prompts(self.cfg, request),
            {m: self.metrics[m] for m in request.metrics},
            harness_options(self.cfg, self.device, progress=False),
            shard=(rank, size),
        )

    def time(self) -> InferenceTime:
        """This actor's inference time per 10 images (its models are warm by now)."""
        prompts = benchmark_prompts(self.cfg, self.requests[0])
        return time_generation(self.generator, prompts, harness_options(self.cfg, self.device))


def evaluate_on_ray(
    cfg: EvalConfig, source: GeneratorSource, device: str, workers: int, cache_dir: str | None
) -> tuple[list[BenchmarkResult], InferenceTime]:
    """Every benchmark's result, and the first actor's inference time per 10 images."""
    import ray

    start_ray(None)  # RAY_ADDRESS joins a cluster; else a fresh local Ray
    gpu = 1 if device.startswith("cuda") else 0
    actor = ray.remote(num_cpus=1, num_gpus=gpu)(EvalWorker)
    pool = [actor.remote(cfg, source, device, cache_dir) for _ in range(workers)]
    requests = active_requests(cfg)
    # set metrics (FID) merge the shards' states here; sample metrics are columns of their rows
    fid_only = [replace(r, metrics=tuple(m for m in r.metrics if m == "fid")) for r in requests]
    set_metrics = build_metrics(fid_only, metric_options(cfg, device, cache_dir))
    ray.get([w.ready.remote() for w in pool])  # models loaded: from here on, scoring only
    started = time.perf_counter()
    options = harness_options(cfg, device)
    results = []
    for i, request in enumerate(requests):
        parts = ray.get([w.shard.remote(i, rank, workers) for rank, w in enumerate(pool)])
        metrics = {m: set_metrics.get(m, m) for m in request.metrics}
        results.append(finish(benchmark_prompts(cfg, request), metrics, parts, options))
    global LAST_SCORING_SECONDS
    LAST_SCORING_SECONDS = time.perf_counter() - started  # read by benchmarks/eval_throughput.py
    timing = ray.get(pool[0].time.remote())
    for w in pool:
        ray.kill(w)
    return results, timing
