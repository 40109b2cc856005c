"""Benchmark evaluation inside a training run: the harness on the current generator at every
evaluation, prompts sharded across data-parallel ranks and gathered on rank 0. No MLflow here:
the results go to the callbacks (the sweep's MLflow logger writes the tables).

:func:`preflight` checks every prompt file and weight file an evaluation config needs, so a
missing one fails a sweep before Ray starts, naming the file, not trial 7 after an hour."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distar.config import ConfigError, EvalConfig
from distar.evaluation.plan import WEIGHT_KEYS, metrics_for, parse_benchmarks, parse_pairs


@dataclass(frozen=True)
class Request:
    benchmark: str
    n: int | None
    metrics: tuple[str, ...]


def requests(cfg: EvalConfig) -> list[Request]:
    restrict = tuple(m.strip() for m in cfg.metrics.split(",") if m.strip())
    return [
        Request(name, n, metrics_for(name, restrict, cfg.tiny_metrics))
        for name, n in parse_benchmarks(cfg.benchmarks)
    ]


def weight_paths(cfg: EvalConfig, cache_dir: str = "") -> dict[str, str]:
    paths = parse_pairs(cfg.weights, WEIGHT_KEYS)
    if cfg.tiny_metrics:
        from distar.evaluation.tiny import cached_tiny_metric_paths

        paths = {**cached_tiny_metric_paths(cache_dir), **paths}
    return paths


def metric_files(metric: str) -> list[tuple[str, Any, bool]]:
    """(MetricOptions key, WeightFile, required) of each file a metric loads."""
    from distar.evaluation import scorers as s
    from distar.rewards.pickscore import PICKSCORE, PICKSCORE_PROCESSOR

    files = {
        "pickscore": [
            ("pickscore", PICKSCORE, True),
            ("pickscore_processor", PICKSCORE_PROCESSOR, False),
        ],
        "clip_score": [("clip_score", s.CLIPSCORE, True)],
        "aesthetic": [
            ("aesthetic_clip", s.AESTHETIC_CLIP, True),
            ("aesthetic_head", s.AESTHETIC_HEAD, True),
        ],
        "hpsv21": [("hpsv21", s.HPS21, True)],
        "imagereward": [
            ("imagereward", s.IMAGEREWARD, True),
            ("bert_tokenizer", s.BERT_TOKENIZER, True),
        ],
        "fid": [("fid_inception", s.FID_INCEPTION, True), ("fid_reference", s.FID_REFERENCE, True)],
    }
    return files[metric]


def preflight(cfg: EvalConfig, cache_dir: str = "") -> None:
    """Load every prompt set and resolve every weight file the config needs; raise
    :class:`ConfigError` naming the first missing or malformed one."""
    from distar import prompts as prompt_sets
    from distar.rewards.weights import MissingWeightsError

    wanted = requests(cfg)
    if not wanted:
        return
    paths = weight_paths(cfg, cache_dir)
    prompt_paths = parse_pairs(cfg.prompts, ("coco", "hps", "parti"))
    for r in wanted:
        try:
            prompt_sets.load(r.benchmark, prompt_paths.get(r.benchmark))
        except (OSError, ValueError) as error:
            raise ConfigError(f"eval.prompts ({r.benchmark}): {error}") from None
        for metric in r.metrics:
            for key, weight_file, required in metric_files(metric):
                if not required and not (paths.get(key) or os.environ.get(weight_file.env)):
                    continue
                try:
                    weight_file.resolve(paths.get(key))
                except MissingWeightsError as error:
                    raise ConfigError(f"eval.weights ({metric}): {error}") from None


class BenchmarkEvaluator:
    """Prompt sets and metric models loaded once per run; :meth:`run` scores a generator."""

    def __init__(self, cfg: EvalConfig, device: str, cache_dir: str = "") -> None:
        from distar import prompts as prompt_sets
        from distar.evaluation.metric_base import MetricOptions, build_metric

        self.cfg, self.device = cfg, device
        self.requests = requests(cfg)
        prompt_paths = parse_pairs(cfg.prompts, ("coco", "hps", "parti"))
        self.prompt_sets = {}
        for r in self.requests:
            full = prompt_sets.load(r.benchmark, prompt_paths.get(r.benchmark))
            if r.n is not None:
                full = full.first(r.n) if cfg.subset == "first" else full.subset(r.n, cfg.seed)
            self.prompt_sets[r.benchmark] = full
        options = MetricOptions(weight_paths(cfg, cache_dir), device, cache_dir or None)
        names = sorted({m for r in self.requests for m in r.metrics})
        self.metrics = {name: build_metric(name, options) for name in names}

    def run(
        self, generator, shard: tuple[int, int] = (0, 1), gather: Callable | None = None
    ) -> list:
        """Every benchmark's result on rank 0 (an empty list on the other ranks)."""
        from distar.evaluation.harness import evaluate

        results = []
        for r in self.requests:
            result = evaluate(
                generator,
                self.prompt_sets[r.benchmark],
                {m: self.metrics[m] for m in r.metrics},
                seed=self.cfg.seed,
                samples_per_prompt=self.cfg.images_per_prompt,
                batch_size=self.cfg.batch_size,
                device=self.device,
                progress=False,
                shard=shard,
                gather=gather,
            )
            if result is not None:
                results.append(result)
        return results
