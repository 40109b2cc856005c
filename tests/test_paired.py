"""Paired comparisons (distar/paired.py) held to closed forms on Gaussian data: the CI against
the paired t-interval, the false-positive rate of an A/A comparison, the power against a known
shift, Holm's adjustment, and the refusal of units that do not pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from distar.paired import UnpairedError, compare, holm, paired_differences, units_needed


def test_the_ci_matches_the_paired_t_interval_on_gaussian_data():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.3, 1.0, 600)
    got = compare(diffs, n_boot=8000, seed=1)
    half = stats.t.ppf(0.975, 599) * diffs.std(ddof=1) / np.sqrt(600)
    assert got.delta == pytest.approx(diffs.mean())
    assert got.ci_low == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert got.ci_high == pytest.approx(diffs.mean() + half, abs=0.1 * half)
    assert got.n_units == 600 and got.n_seeds == 1


def a_pair(rng, shift: float, units: int = 120, seeds: int = 1) -> np.ndarray:
    """Per-unit A - B where both rows see the same prompts (a large prompt effect that pairing
    cancels) and independent noise."""
    prompt = rng.normal(0, 5.0, units)
    a = prompt + shift + rng.normal(0, 1.0, (seeds, units))
    b = prompt + rng.normal(0, 1.0, (seeds, units))
    return a - b


def test_an_a_a_comparison_is_declared_different_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(2)
    repeats = 300
    hits = sum(compare(a_pair(rng, 0.0, seeds=2), n_boot=1000, seed=i).p < 0.05
               for i in range(repeats))  # fmt: skip
    # nominal 5 %; three binomial standard deviations above it is the bound
    assert hits / repeats <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / repeats), hits


def test_a_known_shift_is_found_with_the_predicted_power():
    rng = np.random.default_rng(3)
    units, sd = 120, np.sqrt(2.0)  # the sd of a difference of two unit-variance noises
    shift = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / np.sqrt(units)  # power 0.8
    repeats = 200
    found = sum(compare(a_pair(rng, shift, units), n_boot=1000, seed=i).p < 0.05
                for i in range(repeats))  # fmt: skip
    assert abs(found / repeats - 0.8) < 0.1, found


def test_units_needed_and_holm():
    rng = np.random.default_rng(4)
    diffs = rng.normal(0.1, 1.0, 5000)
    assert units_needed(diffs) == pytest.approx((1.96 * diffs.std(ddof=1) / diffs.mean()) ** 2,
                                                rel=0.01)  # fmt: skip
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def table(indices, values, seed=7):
    return pd.DataFrame({"index": indices, "replica": 0, "seed": seed, "group": "g",
                         "pickscore": values})  # fmt: skip


def test_units_that_do_not_pair_are_refused():
    a, b = table([0, 1, 2], [1.0, 2.0, 3.0]), table([2, 1, 0], [0.5, 1.0, 2.0])
    diffs = paired_differences(a, b, "pickscore")  # paired by unit, not by row order
    assert sorted(diffs["diff"]) == [-1.0, 1.0, 2.5]  # 1 - 2, 2 - 1, 3 - 0.5
    with pytest.raises(UnpairedError, match="1 units only in A, 1 only in B"):
        paired_differences(table([0, 1, 3], [1.0, 2.0, 3.0]), b, "pickscore")
    with pytest.raises(UnpairedError, match="eval.seed must match"):
        paired_differences(table([0, 1, 2], [1.0, 2.0, 3.0], seed=8), b, "pickscore")
    with pytest.raises(UnpairedError, match="non-finite"):
        paired_differences(table([0, 1, 2], [1.0, np.nan, 3.0]), b, "pickscore")


def test_a_sweep_whose_rows_do_not_pair_gets_a_note_not_a_failure(tmp_path):
    """Two runs of one row and seed (a swept setting): the report says why there is no paired
    table instead of failing a sweep that already ran."""
    from analysis.compare import paired_report

    runs = pd.DataFrame({"tags.distar.label": ["a", "a", "b"], "tags.distar.seed": ["0", "0", "0"],
                         "run_id": ["r1", "r2", "r3"], "status": "FINISHED",
                         "tags.distar.final_step": "10"})  # fmt: skip
    text, table = paired_report(runs, f"sqlite:///{tmp_path}/none.db", tmp_path,
                                ("parti/pickscore",))  # fmt: skip
    assert table.empty and text.startswith("no paired table: a row has several runs per seed")
    assert (tmp_path / "paired.md").read_text().startswith("no paired table")


def test_the_paired_stopper_stops_a_trial_as_good_as_the_best_at_most_at_alpha():
    """A/A at every evaluation of a trial (4 evaluations, Bonferroni inside): the share of
    trials ever stopped stays under alpha; a trial worse by 0.25 sd of a difference is
    stopped almost always (the shared prompt effect, sd 5, cancels in the pairs)."""
    from distar.paired import confidently_worse, stop_level

    rng = np.random.default_rng(5)
    level, repeats = stop_level(0.05, 4), 400

    def ever_stopped(shift: float) -> bool:
        return any(confidently_worse(a_pair(rng, shift, units=200)[0], level) for _ in range(4))

    false = sum(ever_stopped(0.0) for _ in range(repeats)) / repeats
    assert false <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / repeats), false
    assert sum(ever_stopped(-0.25 * np.sqrt(2.0)) for _ in range(100)) >= 90
    assert not confidently_worse(np.zeros(500), level)  # all ties: no evidence either way


def write_units(folder, step: int, values: np.ndarray, seed: int = 3) -> str:
    (folder / "units").mkdir(parents=True)
    rows = pd.DataFrame({"prompt": "p", "group": "p", "index": np.arange(len(values)) % 4,
                         "replica": np.arange(len(values)) // 4, "seed": seed,
                         "reward": values, "step": step})  # fmt: skip
    rows.to_json(folder / "units" / "eval.jsonl", orient="records", lines=True)
    return str(folder)


def test_the_paired_stopper_pairs_each_trial_with_the_best_at_the_same_step(tmp_path):
    pytest.importorskip("ray")
    from distar.raytune.paired_stop import PairedStopper
    from distar.raytune.spec import TRIAL_DIR

    rng = np.random.default_rng(6)
    prompt = rng.normal(0, 5.0, 400)  # what pairing cancels: a mean of 400 units alone cannot
    best = write_units(tmp_path / "best", 10, prompt + rng.normal(0, 1, 400))
    worse = write_units(tmp_path / "worse", 10, prompt - 0.5 + rng.normal(0, 1, 400))
    tied = write_units(tmp_path / "tied", 10, prompt + rng.normal(0, 1, 400))
    other = write_units(tmp_path / "other", 10, prompt - 0.5 + rng.normal(0, 1, 400), seed=9)
    stop = PairedStopper("reward", alpha=0.05, decisions=4)

    def report(trial, folder, objective, step=10):
        return stop(trial, {"step": step, "objective": objective, TRIAL_DIR: folder})

    assert not report("best", best, 1.0)  # the first at a step has no incumbent
    assert report("worse", worse, 0.5) and "worse than best at step 10" in stop.stopped["worse"]
    assert not report("tied", tied, 0.99)  # below on its mean, not confidently so on its units
    assert not report("other", other, 0.5)  # another eval seed: nothing pairs, never stop blind
    assert not report("late", worse, 0.5, step=20)  # alone at its step
    assert not report("above", worse, 2.0)  # above the incumbent's objective: no test
