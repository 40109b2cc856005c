"""Paired comparisons of two rows scored on the same items (prompt x image, the same noise), at
the two levels a sweep can make a claim at:

- **setting** ("alpha_rew 10 beats alpha_rew 1 as a recipe"): the replication unit is the
  training seed. Each seed's paired mean difference is one observation; Student-t on S - 1
  degrees of freedom (:func:`setting_level`). Verdicts (Table 2's marks, the ``distar.paired``
  tag) use this level only, and only from :data:`MIN_SEEDS` seeds.
- **checkpoint** ("these trained generators differ on these prompts"): the trained runs are
  fixed and only the items vary; a bootstrap of the items within their prompt groups, the same
  draw in every seed, the seeds kept (:func:`checkpoint_level`). It says nothing about another
  training run of the same setting.

Each training run lands a little differently (a seed x row effect of sd tau); the checkpoint
level sees that as a real difference, so it rejects equal settings more and more often as the
items grow (tau * sqrt(items) >> 1). :func:`plan` splits the variance of a seed's paired mean
into that seed part and the item part and says how many seeds and items per seed a decision
needs -- "more seeds, not more prompts" when the seed part alone is too large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import special, stats

from distar.config.benchmarks import WORLD_ITEMS

# Setting-level verdicts need 3 seeds: with 2, t has 1 degree of freedom (a 95 % critical value
# of 12.7) and one seed's luck decides the sign; Holm over a table then never rejects.
MIN_SEEDS = 3
MAX_SEEDS = 1000  # the planner's search bound


@dataclass(frozen=True)
class Paired:
    """One comparison of A against B on one metric at one level (delta = mean of A - B)."""

    metric: str
    level: str  # "setting" (seeds replicate) or "checkpoint" (items replicate, runs fixed)
    delta: float
    ci_low: float  # NaN where the level cannot say (setting level from one seed)
    ci_high: float
    p: float  # two-sided; NaN where the level cannot test
    df: float  # the t-distribution's degrees of freedom (inf: the normal)
    n_items: int  # per seed
    n_seeds: int
    # per-sample: the share of items on which A scores higher (ties half); not P(A is better)
    items_higher: float


def _ci(delta: float, se: float, df: float, level: float) -> tuple[float, float, float]:
    """(low, high, two-sided p) of a t (or normal, df = inf) statistic ``delta / se``
    (scipy's special functions: a frozen distribution costs more than the whole test)."""
    tail = (1 - level) / 2
    if math.isinf(df):
        half, sf = -float(special.ndtri(tail)) * se, lambda x: float(special.ndtr(-x))
    else:
        half, sf = -float(special.stdtrit(df, tail)) * se, lambda x: float(special.stdtr(df, -x))
    if not (math.isfinite(se) and math.isfinite(delta)):
        return math.nan, math.nan, math.nan
    p = 2 * sf(abs(delta) / se) if se > 0 else float(delta == 0.0)
    return delta - half, delta + half, p


def setting_level(diffs: np.ndarray, metric: str = "", level: float = 0.95) -> Paired:
    """Is the setting better, over training runs? ``diffs``: [seeds, items] of A - B, each
    seed's items paired (same prompts and noise). The per-seed means are independent and,
    being means of many items, close to normal; their one-sample t-test on S - 1 degrees of
    freedom is exact under the mixed model ``value ~ row + (1|item) + (1|seed) + (1|seed:row)``
    with the same items in each seed (the balanced case, where REML with Satterthwaite df
    gives this very test), with nothing to fit or converge."""
    diffs = _as_seeds_items(diffs)
    means = diffs.mean(axis=1)
    s, delta = len(means), float(means.mean())
    win = _win_rate(diffs)
    if s < 2:  # no seed-to-seed spread: nothing to test against
        nan = float("nan")
        return Paired(metric, "setting", delta, nan, nan, nan, 0.0, diffs.shape[1], s, win)
    se = float(means.std(ddof=1) / math.sqrt(s))
    low, high, p = _ci(delta, se, s - 1, level)
    return Paired(metric, "setting", delta, low, high, p, float(s - 1), diffs.shape[1], s, win)


def checkpoint_level(
    diffs: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Paired:
    """Do these trained runs differ on these items? Items resampled within each group (Parti
    category, HPS style: each keeps its share), the same draw in every seed (a prompt counts
    once however many seeds scored it); the seeds are not resampled (the runs are what is
    compared, not the setting). CI: bootstrap quantiles; p: the
    normal tail of ``delta / bootstrap se`` (not floored at 1 / n_boot, which Holm would
    multiply past any threshold)."""
    diffs = _as_seeds_items(diffs)
    if diffs.shape[1] < 2:
        raise ValueError(f"{metric}: {diffs.shape[1]} item(s) per seed; a bootstrap needs 2+")
    groups = np.zeros(diffs.shape[1], dtype=int) if groups is None else np.asarray(groups)
    boot = bootstrap_means(diffs, groups, n_boot, np.random.default_rng(seed))
    delta = float(diffs.mean())
    se = float(boot.std(ddof=1))
    _, _, p = _ci(delta, se, math.inf, level)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return Paired(
        metric,
        "checkpoint",
        delta,
        float(low),
        float(high),
        p,
        math.inf,
        diffs.shape[1],
        diffs.shape[0],
        _win_rate(diffs),
    )


def compare(
    diffs: np.ndarray,
    groups: np.ndarray | None = None,
    metric: str = "",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[Paired, Paired]:
    """Both levels of one comparison: (setting, checkpoint)."""
    return (
        setting_level(diffs, metric, level),
        checkpoint_level(diffs, groups, metric, level, n_boot, seed),
    )


def bootstrap_means(
    diffs: np.ndarray, groups: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap distribution of the mean of ``diffs`` ([seeds, items]): items resampled with
    replacement within each group (each group keeps its share); the seeds stay as they are."""
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # batches bound the memory: seeds x batch x items
        size = min(256, n_boot - start)
        items = np.concatenate(
            [m[rng.integers(0, len(m), (size, len(m)))] for m in members], axis=1
        )
        out[start : start + size] = diffs[:, items].mean(axis=(0, 2))
    return out


def _as_seeds_items(diffs: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(diffs, dtype=np.float64))


def _win_rate(diffs: np.ndarray) -> float:
    return float((diffs > 0).mean() + 0.5 * (diffs == 0).mean())


@dataclass(frozen=True)
class Plan:
    """What a setting-level decision on one comparison needs (80 % power by default), from the
    variance of a seed's paired mean split into its parts:
    ``var(seed mean) = seed_var + item_var / items``."""

    effect: float  # the difference planned for, in the metric's units
    seed_var: float  # between training runs (seed x row), per seed; 0 when none is seen
    item_var: float  # of one item's paired difference within a seed
    n_items: int  # items per seed now
    n_seeds: int
    seeds: int | None  # seeds needed at n_items items per seed (None: more than MAX_SEEDS)
    items: int | None  # items per seed needed at max(n_seeds, MIN_SEEDS) seeds (None: none do)
    note: str = ""  # why there is no plan (one seed, no effect)

    def text(self) -> str:
        """The planner's answer in a table cell."""
        if self.note:
            return self.note
        at = max(self.n_seeds, MIN_SEEDS)
        seeds = f"> {MAX_SEEDS}" if self.seeds is None else str(self.seeds)
        if self.items is None:
            items = f"at {at} seeds no number of items does: more seeds, not more prompts"
        else:
            items = f"or {self.items} items/seed at {at} seeds"
        return f"{seeds} seeds at {self.n_items} items/seed; {items}"


def variance_split(diffs: np.ndarray) -> tuple[float, float]:
    """(seed_var, item_var) by one-way random-effects ANOVA on [seeds, items]: the within-seed
    mean square estimates item_var; the between-seed variance of the seed means, less
    item_var / items, estimates seed_var (floored at 0)."""
    diffs = _as_seeds_items(diffs)
    s, u = diffs.shape
    item_var = float(diffs.var(axis=1, ddof=1).mean()) if u > 1 else 0.0
    if s < 2:
        return float("nan"), item_var
    between = float(diffs.mean(axis=1).var(ddof=1))
    return max(0.0, between - item_var / u), item_var


def power(
    effect: float, seed_var: float, item_var: float, seeds: int, items: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided setting-level t-test (S - 1 df) at ``effect``: noncentral t."""
    if seeds < 2:
        return 0.0
    se = math.sqrt((seed_var + item_var / items) / seeds)
    if se == 0.0:
        return 1.0 if effect else 0.0
    crit = float(stats.t.ppf(1 - alpha / 2, seeds - 1))
    ncp = abs(effect) / se
    if not math.isfinite(ncp):
        return 0.0 if math.isnan(ncp) else 1.0
    got = float(stats.nct.sf(crit, seeds - 1, ncp) + stats.nct.cdf(-crit, seeds - 1, ncp))
    if not math.isfinite(got):  # scipy's noncentral t gives NaN far out in its tail
        got = float(stats.norm.sf(crit - ncp))
    return min(1.0, got)


def plan(
    diffs: np.ndarray, effect: float | None = None, alpha: float = 0.05, target: float = 0.8
) -> Plan:
    """Seeds (at the items per seed used now) and items per seed (at the seeds used now, at
    least :data:`MIN_SEEDS`) for ``target`` power at ``effect`` (default: the observed mean
    difference), at two-sided level ``alpha`` (a report passes its family's Bonferroni level)."""
    diffs = _as_seeds_items(diffs)
    s, u = diffs.shape
    effect = float(abs(diffs.mean()) if effect is None else abs(effect))
    seed_var, item_var = variance_split(diffs)
    base = Plan(effect, seed_var, item_var, u, s, None, None)
    if s < 2 or u < 2:
        why = "1 seed: its seed-to-seed variance" if s < 2 else "1 item a seed: its item variance"
        return replace(base, note=f"{why} is unknown; run {MIN_SEEDS}+ seeds of 2+ items")
    if not math.isfinite(effect):
        return replace(base, note="no finite effect to plan for")
    if effect == 0.0:
        return replace(base, note="no effect observed: no design decides it")

    def ok(seeds: int, items: float) -> bool:
        return power(effect, seed_var, item_var, seeds, items, alpha) >= target

    at = max(s, MIN_SEEDS)
    seeds = _fewest(lambda n: ok(n, u), MIN_SEEDS, MAX_SEEDS) if ok(MAX_SEEDS, u) else None
    items = _fewest(lambda n: ok(at, n), 1, None) if ok(at, math.inf) else None
    return replace(base, seeds=seeds, items=items)


def _fewest(enough, low: int, cap: int | None) -> int:
    """The smallest n >= low with ``enough(n)`` for a monotone ``enough`` (doubling, then
    bisection); ``cap`` (default 10^12) when it does not hold below that."""
    high, cap = low, 10**12 if cap is None else cap  # 10^12 items: "none do" in practice
    while not enough(high):
        if high >= cap:
            return cap
        low, high = high + 1, min(cap, high * 2)
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return low


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the comparisons shown); NaN (no
    test) stays NaN and does not count in the family."""
    values = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(len(values), np.nan)
    tested = np.flatnonzero(~np.isnan(values))
    order = tested[np.argsort(values[tested])]
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def item_metric(metric: str) -> str:
    """A preset metric's per-item name: ``parti/imagereward`` as is, a world metric
    (``reward``) as the world's table names it (``eval/reward``)."""
    return metric if "/" in metric else f"{WORLD_ITEMS}/{metric}"
