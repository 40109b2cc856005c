"""Evaluation spread over a Ray cluster: one actor per worker loads the generator and the metric
models once, generates and scores its share of each benchmark (every N-th sample; each sample's
noise is its own, so shares are independent), and the driver merges the shares in the one-process
order -- the same rows and summaries as one process; FID from the exact sum of the shares'
feature statistics. COCO-30k on N GPUs takes ~1/N of one."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from distar.evaluation.harness import BenchmarkResult, finish, score_shard

LAST_SCORING_SECONDS = float("nan")


class EvalWorker:
    """What one Ray actor holds: the generator and the metrics, built once."""

    def __init__(self, request: dict[str, Any], generator_dir: str | None, cache_dir: str | None):
        from distar.evaluation.runner import build_generator, build_metrics, metric_options

        self.request = request
        self.workdir = Path(tempfile.mkdtemp(prefix="distar-eval-"))
        options = metric_options(request, cache_dir)
        self.metrics = build_metrics(request, options)
        self.generator = build_generator(request, self.workdir, generator_dir)

    def ready(self) -> bool:
        return True

    def shard(self, bench_index: int, rank: int, size: int):
        from distar.evaluation.runner import benchmark_prompts

        r, bench = self.request, self.request["benchmarks"][bench_index]
        return score_shard(
            self.generator, benchmark_prompts(r, bench),
            {m: self.metrics[m] for m in bench["metrics"]}, seed=r["seed"],
            samples_per_prompt=r["samples_per_prompt"], batch_size=r["batch_size"],
            device=r["device"], progress=False, shard=(rank, size),
        )  # fmt: skip


def evaluate_on_ray(
    request: dict[str, Any], workdir: Path, generator_dir: str | None, cache_dir: str | None
) -> list[BenchmarkResult]:
    import ray

    from distar.evaluation.runner import benchmark_prompts, build_metrics, metric_options

    if not ray.is_initialized():
        # RAY_ADDRESS joins a cluster; else a fresh local Ray
        ray.init(address=None if os.environ.get("RAY_ADDRESS") else "local", log_to_driver=False)
    n = request["ray_workers"]
    gpu = 1 if request["device"].startswith("cuda") else 0
    actor = ray.remote(num_cpus=1, num_gpus=gpu)(EvalWorker)
    workers = [actor.remote(request, generator_dir, cache_dir) for _ in range(n)]
    set_only = {**request, "benchmarks": [
        {**b, "metrics": [m for m in b["metrics"] if m == "fid"]} for b in request["benchmarks"]
    ]}  # fmt: skip
    set_metrics = build_metrics(set_only, metric_options(request, cache_dir))
    ray.get([w.ready.remote() for w in workers])  # models loaded: from here on, scoring only
    started = time.perf_counter()
    results = []
    for i, bench in enumerate(request["benchmarks"]):
        parts = ray.get([w.shard.remote(i, rank, n) for rank, w in enumerate(workers)])
        # sample metrics are columns of the shards' rows by now; set metrics merge their states
        metrics = {m: set_metrics.get(m, m) for m in bench["metrics"]}
        results.append(
            finish(benchmark_prompts(request, bench), metrics, parts, request["seed"], 16)
        )
    global LAST_SCORING_SECONDS
    LAST_SCORING_SECONDS = time.perf_counter() - started  # read by benchmarks/eval_throughput.py
    for w in workers:
        ray.kill(w)
    return results
