"""Benchmark evaluation inside a training run: the harness on the current generator at every
evaluation, prompts sharded across data-parallel ranks and gathered on rank 0. No MLflow here:
the results go to the callbacks (the sweep's MLflow logger writes the tables). The training loop
takes it as its ``benchmarks`` (:class:`distar.loop.trainer.BenchmarkRunner`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distar.config.tree import Config, EvalConfig
from distar.evaluation.harness import BenchmarkResult, evaluate
from distar.evaluation.preflight import active_requests
from distar.evaluation.sources import (
    benchmark_prompts,
    build_metrics,
    harness_options,
    metric_options,
)
from distar.runtime.devices import resolve_device
from distar.worlds.base import EvalGenerator


class BenchmarkEvaluator:
    """Prompt sets and metric models, loaded at the first :meth:`run` and kept for the run
    (``python -m distar.cli.evaluate`` scores its one generator with it too, with a progress
    bar)."""

    def __init__(
        self, cfg: EvalConfig, device: str, cache_dir: str = "", progress: bool = False
    ) -> None:
        self.cfg, self.device, self.cache_dir, self.progress = cfg, device, cache_dir, progress
        self.requests = active_requests(cfg)
        self.prompt_sets: dict[str, Any] = {}
        self.metrics: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self.metrics is None:
            self.prompt_sets = {r.benchmark: benchmark_prompts(self.cfg, r) for r in self.requests}
            options = metric_options(self.cfg, self.device, self.cache_dir)
            self.metrics = build_metrics(self.requests, options)
        return self.metrics

    def run(
        self,
        generator: EvalGenerator,
        shard: tuple[int, int] = (0, 1),
        gather: Callable[[Any], list[Any]] | None = None,
    ) -> list[BenchmarkResult]:
        """Every benchmark's result on rank 0 (an empty list on the other ranks)."""
        metrics = self._load()
        options = harness_options(self.cfg, self.device, self.progress)
        results = []
        for r in self.requests:
            prompts, chosen = self.prompt_sets[r.benchmark], {m: metrics[m] for m in r.metrics}
            result = evaluate(generator, prompts, chosen, options, shard, gather)
            if result is not None:
                results.append(result)
        return results


def benchmark_evaluator(config: Config) -> BenchmarkEvaluator | None:
    """The training loop's benchmark runner for ``config`` (None: no ``eval.benchmarks``)."""
    if not config.eval.benchmarks:
        return None
    return BenchmarkEvaluator(config.eval, str(resolve_device(config.train.device)))
