"""How often the paired verdicts and the paired stopper are wrong, measured by simulation in the
regime a sweep runs in: each training run lands a little differently. Not a test (the tests
assert these rates: tests/test_paired.py, tests/test_stopping.py, with these models).

    python benchmarks/paired_calibration.py [--repeats 4000]

The model: value[row, seed, item] = item effect (sd 5, shared by rows and seeds) + seed effect
(sd 1, shared by a seed's rows) + row x seed effect (sd tau: a training run's own luck) + row
effect + noise (sd 1). Printed: A/A false-positive rates at S = 2, 3, 5 seeds, tau = 0 and
tau sqrt(U) = 3, at the setting level, the checkpoint level and the pooled bootstrap the report
used before (seeds resampled with the items, normal tail); the share of whole null Table-2s
(11 rows x 4 metrics) with any mark; the setting level's power against the noncentral t's
prediction; the paired stopper's false stops among 8 equal trials.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy import optimize, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.paired_table import Found, setting_table, verdicts  # noqa: E402
from distar.track.paired import checkpoint_level, power, setting_level  # noqa: E402
from distar.track.stopping import StopRule  # noqa: E402

ALPHA = 0.05


def values(rng, rows: int, seeds: int, items: int, tau: float, effects=None) -> np.ndarray:
    """[rows, seeds, items] under the model above; ``effects``: each row's true effect."""
    effects = np.zeros(rows) if effects is None else np.asarray(effects, dtype=float)
    item = rng.normal(0, 5.0, items)
    seed = rng.normal(0, 1.0, (1, seeds, 1))
    run = rng.normal(0, tau, (rows, seeds, 1))
    return item + seed + run + effects[:, None, None] + rng.normal(0, 1.0, (rows, seeds, items))


def a_a(rng, seeds: int, items: int, tau: float, shift: float = 0.0) -> np.ndarray:
    """[seeds, items] of row B - row A, the rows equal unless ``shift``."""
    v = values(rng, 2, seeds, items, tau, [0.0, shift])
    return v[1] - v[0]


def pooled_p(diffs: np.ndarray, rng, n_boot: int = 200) -> float:
    """The report's test before: seeds resampled with replacement together with the items, the
    normal tail of delta / bootstrap se (kept here only to measure it)."""
    s, u = diffs.shape
    items = rng.integers(0, u, (n_boot, u))
    per_seed = diffs[:, items].mean(axis=2).T  # [boot, seeds]
    boot = np.take_along_axis(per_seed, rng.integers(0, s, (n_boot, s)), axis=1).mean(axis=1)
    return float(2 * stats.norm.sf(abs(diffs.mean()) / boot.std(ddof=1)))


def null_table(rng, seeds: int, tau: float, metrics: int = 4, rows: int = 11) -> list[Found]:
    """A whole Table 2 of equal rows: each row's paired differences against the first, per
    metric (independent metrics), as the report's pairing hands them over."""
    found = []
    for m in range(metrics):
        v = values(rng, rows, seeds, 100, tau)
        found += [Found(f"row {r}", "row 0", f"eval/m{m}", v[r] - v[0]) for r in range(1, rows)]
    return found


def marked(found: list[Found], p_scales: tuple[float, ...] = (1.0,)) -> list[bool]:
    """Per entry of ``p_scales``, whether the report's setting table and verdict cells mark any
    row with every p divided by it (a scale above 1 is a mutation; Holm is scale-equivariant
    below its cap). The setting table, the costly part, is built once for all of them."""
    table = setting_table(found)
    table["level"], table.attrs["baseline"] = "setting", found[0].baseline
    p_adj, out = table["p_adj"].copy(), []
    for scale in p_scales:
        table["p_adj"] = p_adj / scale
        out.append(any("▲" in v or "▼" in v for v in verdicts(table).values()))
    return out


def trial_items(
    rng,
    n_trials: int,
    items: int,
    run_sd: float,
    skew: np.ndarray,
    shift: np.ndarray,
    evaluations: int,
):
    """Per evaluation, [trials, items]: a shared item effect + each trial's run effect (fixed
    for the run, plus a little drift per evaluation) + its setting's shift + mean-zero noise
    skewed right (skew +1) or left (-1), so that differences between trials are skewed too."""
    item = rng.normal(0, 3.0, items)
    run = rng.normal(0, run_sd, n_trials)
    for _ in range(evaluations):
        drift = rng.normal(0, 0.1 * run_sd, n_trials)
        noise = skew[:, None] * (rng.exponential(1.0, (n_trials, items)) - 1.0)
        yield item + (run + drift + shift)[:, None] + noise


def pair(mine: np.ndarray, theirs: np.ndarray, step: int) -> np.ndarray:
    return mine - theirs


def search(
    rng,
    rule: StopRule,
    n_trials: int = 8,
    items: int = 400,
    run_sd: float = 0.05,
    shift: np.ndarray | None = None,
) -> set[int]:
    """One search through ``rule``: at each evaluation every running trial reports, in a
    random order; a stopped trial reports no more. Returns the stopped trials."""
    shift = np.zeros(n_trials) if shift is None else shift
    skew = rng.choice([-1.0, 1.0], n_trials)
    stopped: set[int] = set()
    for step, x in enumerate(
        trial_items(rng, n_trials, items, run_sd, skew, shift, rule.evaluations)
    ):
        for t in rng.permutation(n_trials):
            if t not in stopped and rule(int(t), step, float(x[t].mean()), x[t]) is not None:
                stopped.add(int(t))
    return stopped


def false_stops(
    rng,
    searches: int,
    evaluations: int,
    run_sd: float,
    rule_sd: float,
    items: int = StopRule.MIN_ITEMS,
) -> tuple[float, float, float]:
    """(share of equal trials ever stopped, its standard error over searches, share of
    searches that stopped any): 8 equal trials per search, ``items`` each."""
    per_search, anyone = [], 0
    for _ in range(searches):
        rule = StopRule(ALPHA, evaluations, rule_sd, pair, 8)
        stopped = search(rng, rule, items=items, run_sd=run_sd)
        per_search.append(len(stopped) / 8)
        anyone += bool(stopped)
    share = float(np.mean(per_search))
    return share, float(np.std(per_search, ddof=1) / math.sqrt(searches)), anyone / searches


def a_a_rates(repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(f"A/A false-positive rate at p < {ALPHA} ({repeats} repeats, 400 items per seed)")
    print("| seeds | tau sqrt(U) | setting level | checkpoint level | pooled bootstrap (before) |")
    print("|---|---|---|---|---|")
    for seeds in (2, 3, 5):
        for tau in (0.0, 0.15):
            hits = np.zeros(3)
            for i in range(repeats):
                d = a_a(rng, seeds, 400, tau)
                hits += [
                    setting_level(d).p < ALPHA,
                    checkpoint_level(d, n_boot=200, seed=i).p < ALPHA,
                    pooled_p(d, rng) < ALPHA,
                ]
            rates = " | ".join(f"{h / repeats:.1%}" for h in hits)
            print(f"| {seeds} | {tau * 20:.0f} | {rates} |")


def null_tables(repeats: int) -> None:
    rng = np.random.default_rng(1)
    n = repeats
    print(
        f"\nwhole null Table 2 (11 equal rows x 4 metrics, tau sqrt(U) = 4.5, {n} tables): "
        "share with any ▲ / ▼ (2 seeds: none by rule)"
    )
    for seeds in (3, 5):
        tables = [null_table(rng, seeds, 0.45) for _ in range(n)]
        rate, mutated = np.mean([marked(t, (1.0, 1.5)) for t in tables], axis=0)
        print(f"  {seeds} seeds: {rate:.1%}  (every p / 1.5: {mutated:.1%})")


def power_check(repeats: int) -> None:
    rng = np.random.default_rng(2)
    seeds, items, tau = 5, 200, 0.2
    effect = optimize.brentq(lambda e: power(e, 2 * tau**2, 2.0, seeds, items) - 0.5, 1e-3, 5)
    found = np.mean(
        [setting_level(a_a(rng, seeds, items, tau, effect)).p < ALPHA for _ in range(repeats)]
    )
    print(
        f"\npower, 5 seeds x 200 items, tau 0.2, effect {effect:.3f}: predicted 50.0 %, "
        f"measured {found:.1%}"
    )


def stopper_rates(repeats: int) -> None:
    rng = np.random.default_rng(3)
    n = max(100, repeats // 4)
    print(
        f"\npaired stopper, 8 equal trials, skewed noise, {n} searches: share of searches "
        "that stop some equal trial (each trial's own rate)"
    )
    for run_sd, evaluations in ((0.05, 5), (0.05, 10), (0.0, 5)):
        share, se, anyone = false_stops(rng, n, evaluations, run_sd, run_sd)
        line = (
            f"  run sd {run_sd}, {evaluations} evaluations, {StopRule.MIN_ITEMS} items: "
            f"{anyone:.1%} ({share:.2%} ± {se:.2%})"
        )
        if run_sd:
            _, _, blind = false_stops(rng, n, evaluations, run_sd, 0.0)
            line += f"; with no run sd in the test: {blind:.1%}"
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=4000)
    args = p.parse_args()
    a_a_rates(args.repeats)
    null_tables(args.repeats)
    power_check(args.repeats)
    stopper_rates(args.repeats)


if __name__ == "__main__":
    main()
