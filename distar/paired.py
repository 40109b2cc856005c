"""Paired comparisons of two runs scored on the same units (prompt x image, the same noise):
the mean difference with a paired bootstrap CI (units resampled within their group -- Parti
category, HPS style -- and seeds resampled too), a two-sided p-value, Holm's adjustment across
comparisons, the probability of improvement, and how many units a decision would need; and
the one-sided test a sweep stops a trial on (:func:`confidently_worse`).

Pairing removes the between-prompt variance that per-row means ± CI over seeds keep: two rows
scored on identical prompts and noise differ only by what the setting changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from distar.benchmark_catalogue import WORLD_UNITS

UNIT_KEYS = ("index", "replica", "seed")  # a sample's prompt, image and noise seed


class UnpairedError(ValueError):
    """Two runs whose units (prompts, images, noise seeds) are not the same set."""


@dataclass(frozen=True)
class Paired:
    """One comparison of A against B on one metric (delta = mean of A - B)."""

    metric: str
    delta: float
    ci_low: float
    ci_high: float
    p: float
    prob_improvement: float  # P(A's unit beats B's), ties counting half
    n_units: int
    n_seeds: int
    units_needed: int  # units at which the CI would exclude 0, for this effect and spread


def paired_differences(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-unit ``a - b`` of ``metric`` with the unit's group; refuses unit sets that differ
    (another prompt subset, image count or evaluation seed: then nothing pairs)."""
    keys = [k for k in UNIT_KEYS if k in a and k in b]
    left, right = a.set_index(keys), b.set_index(keys)
    if left.index.has_duplicates or right.index.has_duplicates:
        raise UnpairedError(f"units repeat within a run (keys {keys}); one row per unit")
    only_a, only_b = left.index.difference(right.index), right.index.difference(left.index)
    if len(only_a) or len(only_b):
        raise UnpairedError(
            f"{len(only_a)} units only in A, {len(only_b)} only in B (keys {keys}): the runs "
            "were not scored on the same prompts, images and noise (eval.benchmarks, "
            "eval.images_per_prompt, eval.seed must match)"
        )
    joined = left[[metric, "group"]].join(right[[metric]].add_suffix("_b")).sort_index()
    diff = (joined[metric] - joined[f"{metric}_b"]).to_numpy(dtype=np.float64)
    if not np.isfinite(diff).all():
        raise UnpairedError(f"{metric}: non-finite values; failed units are excluded upstream")
    return pd.DataFrame({"group": joined["group"].to_numpy(), "diff": diff})


def bootstrap_means(
    diffs: np.ndarray, groups: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution of the mean of ``diffs`` ([seeds, units]): units resampled with
    replacement within each group (each group keeps its share), seeds resampled too."""
    n_seeds, n_units = diffs.shape
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # batches bound the memory: seeds x batch x units
        size = min(256, n_boot - start)
        units = np.concatenate(
            [m[rng.integers(0, len(m), (size, len(m)))] for m in members], axis=1
        )
        per_seed = diffs[:, units].mean(axis=2).T  # [batch, seeds]: each seed's unit mean
        seeds = rng.integers(0, n_seeds, (size, n_seeds))
        out[start : start + size] = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    return out


def compare(
    diffs: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Paired:
    """The paired comparison of ``diffs`` (A - B per unit; [units] or [seeds, units])."""
    diffs = np.atleast_2d(np.asarray(diffs, dtype=np.float64))
    groups = np.zeros(diffs.shape[1], dtype=int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    boot = bootstrap_means(diffs, groups, n_boot, rng)
    delta = float(diffs.mean())
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    # two-sided p from the bootstrap's standard error (stratified, seeds resampled) and the
    # normal tail: not floored at 1 / n_boot as a count of bootstrap draws is, which Holm over
    # a table of comparisons multiplies past any threshold
    se = float(boot.std(ddof=1))
    p = float(2 * stats.norm.sf(abs(delta) / se)) if se > 0 else float(delta == 0.0)
    flat = diffs.ravel()
    improvement = float((flat > 0).mean() + 0.5 * (flat == 0).mean())
    return Paired(metric, delta, float(low), float(high), p, improvement, diffs.shape[1],
                  diffs.shape[0], units_needed(flat, level))  # fmt: skip


def units_needed(diffs: np.ndarray, level: float = 0.95) -> int:
    """Units at which a CI of this width (normal approximation) would just exclude zero, for the
    observed mean and spread of the per-unit differences (what ``eval.benchmarks=bench:N``
    should be next time)."""
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if mean == 0.0:
        return -1  # no effect observed: no number of units decides it
    z = stats.norm.ppf(1 - (1 - level) / 2)
    return max(2, math.ceil((z * sd / abs(mean)) ** 2))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the comparisons shown)."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def unit_metric(metric: str) -> str:
    """A preset metric's per-unit name: ``parti/imagereward`` as is, a world metric
    (``reward``) as the world's table names it (``eval/reward``)."""
    return metric if "/" in metric else f"{WORLD_UNITS}/{metric}"


def read_units(trial_dir: Path, bench: str, step: int) -> pd.DataFrame | None:
    """The per-sample rows a trial wrote for ``bench`` at ``step`` (``units/<bench>.jsonl``,
    :class:`distar.callbacks.JsonlLogger`); None when it wrote none."""
    path = Path(trial_dir) / "units" / f"{bench}.jsonl"
    if not path.exists():
        return None
    table = pd.read_json(path, lines=True, dtype={"prompt": str, "group": str})
    table = table[table["step"] == step]
    return None if table.empty else one_row_per_unit(table)


def one_row_per_unit(table: pd.DataFrame) -> pd.DataFrame:
    """A unit's last row at its step: a retried trial may record an evaluation twice (the same
    step, the same values)."""
    return table.drop_duplicates([k for k in (*UNIT_KEYS, "step") if k in table], keep="last")


def stop_level(alpha: float, decisions: int) -> float:
    """The level of each of a trial's stopping tests: Bonferroni over its ``decisions``, so a
    trial no worse than the incumbent is stopped at some evaluation with probability <= alpha."""
    return alpha / max(1, decisions)


def confidently_worse(diffs: np.ndarray, level: float) -> bool:
    """True when the per-unit differences (trial - incumbent, paired) are shifted below zero at
    one-sided ``level``: Wilcoxon's signed-rank test, as Optuna's ``WilcoxonPruner`` uses (zero
    differences split between the signs: ties, common in 0/1 metrics, count against neither)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 10 or not np.any(diffs):
        return False
    p = stats.wilcoxon(diffs, alternative="less", zero_method="zsplit").pvalue
    return bool(p < level and diffs.mean() < 0)
