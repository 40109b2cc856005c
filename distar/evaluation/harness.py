"""Generate for a benchmark's prompts and score every sample with every metric.

A generator is a world's :class:`~distar.worlds.base.EvalGenerator` (``noise_shape`` and
``(prompts, noise) -> samples``): a one-step text-to-image model (images in [0, 1]) or the
embedded world (points). How to sample is one :class:`HarnessOptions`. Each sample's
noise comes from its own seed, derived from (base seed, benchmark, prompt index, replica), so the
images do not depend on the batch size or on which other prompts are evaluated alongside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from distar.config.benchmarks import ROW_KEYS
from distar.data.prompts import Prompt, PromptSet
from distar.evaluation.metric_base import is_set_metric
from distar.evaluation.summary import metric_name, summarise
from distar.worlds.base import EvalGenerator as Generator


@dataclass(frozen=True)
class HarnessOptions:
    """How a benchmark is sampled and scored (the same for one process, rank shards and Ray
    actors): ``seed`` fixes every sample's noise, ``samples_per_prompt`` images a prompt,
    ``batch_size`` samples a generator call, ``keep_examples`` first samples for the grid."""

    seed: int = 0
    samples_per_prompt: int = 1
    batch_size: int = 16
    device: str = "cpu"
    keep_examples: int = 16
    progress: bool = True


def sample_seed(base_seed: int, benchmark: str, index: int, replica: int = 0) -> int:
    digest = hashlib.sha256(f"{base_seed}/{benchmark}/{index}/{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # a non-negative int64


def noise_for(seeds: Sequence[int], shape: tuple[int, ...], device: str | torch.device = "cpu"):
    """One independent standard normal draw per seed (CPU generator: identical on any device)."""
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(draws).to(device)


@dataclass
class BenchmarkResult:
    benchmark: str
    rows: pd.DataFrame  # one row per sample: prompt, group, index, replica, seed, metrics
    summary: dict[str, float]  # MLflow metric name -> value
    examples: Tensor  # the first few samples, for an image grid
    prompts_source: str = ""  # the prompt file (PromptSet.source: "shipped:..." or a path)
    grid: Path | None = None  # its image grid drawn already (a result read from a run's records)

    @property
    def metric_columns(self) -> list[str]:
        return [c for c in self.rows.columns if c not in ROW_KEYS]


@dataclass
class Shard:
    """What one process made of its share of a benchmark: per-sample rows, its first examples
    (with their positions in the one-process order) and the states of the set metrics."""

    rows: pd.DataFrame
    examples: Tensor
    positions: list[int]
    set_states: dict[str, Any]


def score_shard(
    generator: Generator,
    prompts: PromptSet,
    metrics: Mapping[str, Any],
    options: HarnessOptions = HarnessOptions(),
    shard: tuple[int, int] = (0, 1),
) -> Shard:
    """Generate and score every ``size``-th sample from ``rank`` on (``shard=(rank, size)``)."""
    from tqdm.auto import tqdm

    rank, size = shard
    seed, batch_size, device = options.seed, options.batch_size, options.device
    keep_examples = options.keep_examples
    every = [(p, r) for p in prompts.prompts for r in range(options.samples_per_prompt)]
    positions = list(range(rank, len(every), size))
    items = [every[i] for i in positions]
    seeds = [sample_seed(seed, prompts.name, p.index, r) for p, r in items]
    for m in metrics.values():
        if is_set_metric(m):
            m.reset()
    scores: dict[str, list[Tensor]] = {n: [] for n, m in metrics.items() if not is_set_metric(m)}
    examples: list[Tensor] = []
    batches = range(0, len(items), batch_size)
    for lo in tqdm(batches, desc=prompts.name, disable=not options.progress):
        texts = [p.text for p, _ in items[lo : lo + batch_size]]
        with torch.no_grad():
            images = generator(
                texts, noise_for(seeds[lo : lo + batch_size], generator.noise_shape, device)
            )
        check_finite(images, prompts.name, lo)
        if sum(len(e) for e in examples) < keep_examples:
            examples.append(images[:keep_examples].detach().cpu())
        score_batch(metrics, images, texts, scores, lo)
    rows = make_rows(items, seeds, {n: torch.cat(v).cpu() for n, v in scores.items()})
    kept = torch.cat(examples)[:keep_examples] if examples else torch.empty(0)
    states = {n: set_metric_state(n, m, size) for n, m in metrics.items() if is_set_metric(m)}
    return Shard(rows, kept, positions[: len(kept)], states)


def set_metric_state(name: str, metric, size: int):
    """One process: nothing to carry (the metric computes in place). Several: the metric's
    mergeable state (FID: sums of features), merged exactly on the gathering side."""
    if size == 1:
        return None
    if not hasattr(metric, "shard_state"):
        raise ValueError(f"{name}: this set metric cannot be sharded (no shard_state())")
    return metric.shard_state()


def finish(
    prompts: PromptSet, metrics: Mapping[str, Any], parts: list[Shard], options: HarnessOptions
) -> BenchmarkResult:
    """Merge the shards (in the one-process order) and summarise."""
    rows, examples = merge_shards(parts, options.keep_examples)
    names = [n for n, m in metrics.items() if not is_set_metric(m)]
    summary = summarise(rows, prompts.name, names, options.seed)
    for name, m in metrics.items():
        if is_set_metric(m):
            if len(parts) > 1:
                m.merge_shard_states([p.set_states[name] for p in parts])
            summary.update(set_metric_values(prompts.name, name, m))
    return BenchmarkResult(prompts.name, rows, summary, examples, prompts.source)


def evaluate(
    generator: Generator,
    prompts: PromptSet,
    metrics: Mapping[str, Any],
    options: HarnessOptions = HarnessOptions(),
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
) -> BenchmarkResult | None:
    """Score ``generator`` on ``prompts``; ``metrics`` maps names to sample or set metrics.

    ``shard=(rank, size)``: this process generates and scores every size-th sample only, and
    ``gather`` (an all-gather every rank calls) brings the shards to rank 0, which alone returns
    the result -- the same rows, summary and examples as one process, since each sample's noise
    is its own; set metrics (FID) merge their feature sums exactly."""
    parts = [score_shard(generator, prompts, metrics, options, shard)]
    if shard[1] > 1:
        parts = (gather or _no_gather)(parts[0])
        if shard[0] != 0:
            return None
    return finish(prompts, metrics, parts, options)


def merge_shards(parts: list[Shard], keep_examples: int) -> tuple[pd.DataFrame, Tensor]:
    """Rows of every shard in the one-process order (prompt, then image); the first examples."""
    rows = pd.concat([p.rows for p in parts], ignore_index=True)
    rows = rows.sort_values(["index", "replica"], kind="stable").reset_index(drop=True)
    found = [(pos, img) for p in parts for pos, img in zip(p.positions, p.examples, strict=True)]
    found.sort(key=lambda f: f[0])
    examples = [img for _, img in found[:keep_examples]]
    return rows, torch.stack(examples) if examples else torch.empty(0)


def _no_gather(obj: Any) -> list[Any]:
    raise ValueError("evaluate(shard=(rank, size > 1)) needs a gather function")


def score_batch(metrics, images: Tensor, texts: list[str], scores, at: int) -> None:
    for name, m in metrics.items():
        if is_set_metric(m):
            m.update(images, texts)
        else:
            with torch.no_grad():
                values = m.score(images, texts).detach().float()
            if values.shape != (len(texts),):
                raise ValueError(f"{name}: {tuple(values.shape)} scores for {len(texts)} samples")
            check_finite(values, name, at)
            scores[name].append(values)


def set_metric_values(benchmark: str, name: str, metric) -> dict[str, float]:
    value = metric.compute()
    if isinstance(value, Mapping):  # e.g. the embedded world's exact metrics, several at once
        return {metric_name(benchmark, k): float(v) for k, v in value.items()}
    return {metric_name(benchmark, name): float(value)}


def make_rows(items: list[tuple[Prompt, int]], seeds: list[int], scores: dict[str, Tensor]):
    table = {
        "prompt": [p.text for p, _ in items],
        "group": [p.group for p, _ in items],
        "challenge": [p.challenge for p, _ in items],
        "index": [p.index for p, _ in items],
        "replica": [r for _, r in items],
        "seed": seeds,
    }
    return pd.DataFrame({**table, **{n: v.numpy() for n, v in scores.items()}})


def check_finite(x: Tensor, what: str, at: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{what}: non-finite values in the batch starting at sample {at}")
