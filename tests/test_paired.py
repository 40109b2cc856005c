"""Paired comparisons (distar/track/paired.py, analysis/paired_table.py) held to closed forms and to
their error rates in the regime a sweep runs in: each training run lands a little differently.

The model (benchmarks/paired_calibration.py, which prints these rates): value[row, seed, item] =
item effect (sd 5, shared by rows and seeds: pairing cancels it) + seed effect (sd 1, shared by
the rows of a seed: cancels too) + row x seed effect (sd tau: a training run's own luck) + row
effect + noise (sd 1). tau * sqrt(items) >= 3 is the hard case: a checkpoint-level test then
rejects equal settings most of the time.

Every calibration test holds its rate in a band of 3 binomial standard deviations around the
nominal level (noise fails it 0.3 % of the time) and carries its own mutation check: the same
p-values divided by 1.5 must land outside the band (a test that passes a 1.5x liberal p-value
could not catch a real bug). Repeats are sized so that the mutation is caught: at alpha 0.05 a
1.5x liberal test rejects 7.5 %, 3 binomial sds away from 5 % plus 3 of its own at 4000
repeats.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from benchmarks.paired_calibration import a_a, marked, null_table, values
from distar.track.paired import (
    MIN_SEEDS,
    checkpoint_level,
    compare,
    holm,
    plan,
    power,
    setting_level,
    variance_split,
)
from distar.track.pairing import UnpairedError, paired_differences, shared_seeds, stack_seeds

ALPHA = 0.05


def band(rate: float, n: int, p0: float = ALPHA) -> tuple[float, float]:
    half = 3 * math.sqrt(p0 * (1 - p0) / n)
    return p0 - half, p0 + half


def check_calibrated(pvalues: np.ndarray, nominal: float = ALPHA) -> None:
    """The rejection rate is in the band around ``nominal``; p / 1.5 (a 1.5x liberal test) is
    not."""
    low, high = band(nominal, len(pvalues), nominal)
    rate = float(np.mean(pvalues < ALPHA))
    mutated = float(np.mean(pvalues / 1.5 < ALPHA))
    assert low <= rate <= high, (rate, low, high)
    assert not low <= mutated <= high, f"p / 1.5 passed too ({mutated}): the test cannot fail"


def test_the_setting_level_is_the_t_test_on_the_seeds_paired_means():
    rng = np.random.default_rng(0)
    diffs = a_a(rng, 4, 300, 0.2, shift=0.3)
    got = setting_level(diffs, "m")
    want = stats.ttest_1samp(diffs.mean(axis=1), 0.0)
    ci = want.confidence_interval(0.95)
    assert got.level == "setting" and got.df == 3 and got.n_seeds == 4 and got.n_items == 300
    assert got.p == pytest.approx(want.pvalue, rel=1e-9)
    assert (got.ci_low, got.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    one = setting_level(diffs[:1])  # one seed: no spread to test against
    assert math.isnan(one.p) and math.isnan(one.ci_low) and one.n_seeds == 1
    assert math.isnan(setting_level(np.full((3, 4), np.nan)).p)  # no number, no mark


def test_the_checkpoint_ci_matches_the_paired_t_interval_on_gaussian_data():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.3, 1.0, 600)
    got = checkpoint_level(diffs, n_boot=8000, seed=1)
    half = stats.t.ppf(0.975, 599) * diffs.std(ddof=1) / np.sqrt(600)
    assert got.level == "checkpoint" and got.delta == pytest.approx(diffs.mean())
    assert got.ci_low == pytest.approx(diffs.mean() - half, abs=0.1 * half)
    assert got.ci_high == pytest.approx(diffs.mean() + half, abs=0.1 * half)


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_a_a_setting_level_false_positives_hold_alpha_when_runs_differ(seeds):
    """tau sqrt(U) = 3 (tau 0.15, 400 items): the old pooled bootstrap rejected 18-38 % of
    these. The setting level holds 5 % at every seed count (t on S - 1 df is exact here)."""
    rng = np.random.default_rng(10 + seeds)
    p = np.array([setting_level(a_a(rng, seeds, 400, 0.15)).p for _ in range(4000)])
    check_calibrated(p)


def test_a_a_without_run_effects_holds_alpha_at_both_levels():
    rng = np.random.default_rng(20)
    diffs = [a_a(rng, 2, 100, 0.0) for _ in range(4000)]
    check_calibrated(np.array([setting_level(d).p for d in diffs]))
    check_calibrated(
        np.array([checkpoint_level(d, n_boot=200, seed=i).p for i, d in enumerate(diffs)])
    )


def test_the_checkpoint_level_rejects_equal_settings_when_runs_differ():
    """What the checkpoint level is not: with tau sqrt(U) = 3 it calls equal settings
    different most of the time -- the runs do differ; the settings do not."""
    rng = np.random.default_rng(21)
    p = [checkpoint_level(a_a(rng, 3, 400, 0.15), n_boot=200, seed=i).p for i in range(300)]
    assert np.mean(np.array(p) < ALPHA) > 0.5


def test_a_known_effect_is_found_at_the_predicted_power():
    """5 seeds x 200 items, tau 0.2: the effect with predicted power 0.5 (noncentral t) is
    found at that rate; p / 1.5 would find it visibly more often."""
    rng = np.random.default_rng(30)
    seeds, items, tau = 5, 200, 0.2
    seed_var, item_var = 2 * tau**2, 2.0  # two runs' effects; two noises per difference

    def predicted(effect: float) -> float:
        return power(effect, seed_var, item_var, seeds, items, ALPHA)

    effect = optimize.brentq(lambda e: predicted(e) - 0.5, 1e-3, 5.0)
    p = np.array([setting_level(a_a(rng, seeds, items, tau, effect)).p for _ in range(4000)])
    low, high = band(0.5, len(p), 0.5)
    assert low <= np.mean(p < ALPHA) <= high
    assert not low <= np.mean(p / 1.5 < ALPHA) <= high


def test_the_plan_asks_for_seeds_not_prompts_when_runs_dominate():
    rng = np.random.default_rng(40)
    diffs = a_a(rng, 4, 2000, 0.3, shift=0.3)
    seed_var, item_var = variance_split(diffs)
    assert item_var == pytest.approx(2.0, rel=0.05)  # two item noises of sd 1
    found = plan(diffs, effect=0.3)
    assert found.items is None and "more seeds, not more prompts" in found.text()

    def pw(n):
        return power(0.3, seed_var, item_var, n, 2000)

    assert pw(found.seeds) >= 0.8 > pw(found.seeds - 1)
    few_items = plan(a_a(rng, 5, 50, 0.0, shift=0.3), effect=0.3)  # no run effect
    assert few_items.items is not None and few_items.items > 50
    huge = plan(a_a(rng, 2, 2000, 0.0, shift=3.0))  # decided with 2, but a verdict needs 3
    assert huge.seeds == MIN_SEEDS


def test_an_undecided_comparison_never_asks_for_fewer_seeds_or_items():
    """In an A/A whose p is above alpha, the plan at the observed effect always wants more
    than was run (the old items_needed asked for fewer items than were used at p = 0.28)."""
    rng = np.random.default_rng(41)
    for _ in range(300):
        diffs = a_a(rng, 3, 200, 0.1)
        if setting_level(diffs).p < ALPHA:
            continue
        got = plan(diffs, alpha=ALPHA)
        assert got.note or got.seeds is None or got.seeds > 3, got
        assert got.note or got.items is None or got.items > 200, got


def test_holm_skips_untested_comparisons():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    got = holm([0.01, float("nan"), 0.04])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)


def test_a_whole_null_table_is_marked_at_most_at_alpha():
    """11 equal rows x 4 metrics, 3 seeds, tau sqrt(U) = 4.5, through the report's setting
    table, Holm and verdict cells: the share of tables with any ▲ / ▼ stays within Monte-Carlo
    error of alpha (the old report marked 77.5 % of them); the same tables with every p / 1.5
    break the bound."""
    rng = np.random.default_rng(50)
    tables = [null_table(rng, 3, 0.45) for _ in range(4000)]
    rate, mutated = np.mean([marked(t, (1.0, 1.5)) for t in tables], axis=0)
    bound = band(ALPHA, len(tables))[1]
    assert rate <= bound, rate
    assert mutated > bound, f"p / 1.5 stayed under the bound ({mutated})"


def test_too_few_seeds_get_no_mark_and_say_how_many_are_needed():
    from analysis.paired_table import Found, plan_columns, setting_table, verdicts

    rng = np.random.default_rng(60)
    v = values(rng, 2, 2, 400, 0.0, [0.0, 3.0])  # a huge effect, 2 seeds
    found = null_table(rng, 2, 0.1, metrics=1, rows=2)
    found.append(Found("row big", "row 0", "eval/m0", v[1] - v[0]))
    table = plan_columns(setting_table(found), found)
    table.attrs["baseline"] = "row 0"
    cell = verdicts(table)["row big"]
    assert cell.startswith(f"no verdict: 2 seeds, {MIN_SEEDS}+ needed"), cell
    assert table["p_adj"].isna().all()  # never in a Holm family, never marked


def item_table(values_, seed=7, step=10, without=()) -> pd.DataFrame:
    n = len(values_)
    table = pd.DataFrame(
        {
            "index": np.arange(n),
            "replica": 0,
            "seed": seed,
            "step": step,
            "group": "g",
            "pickscore": values_,
        }
    )
    return table.drop(columns=list(without))


def test_items_that_do_not_pair_are_refused_in_one_line():
    a, b = item_table([1.0, 2.0, 3.0]), item_table([1.0, 2.0, 0.5]).iloc[[2, 1, 0]]
    diffs = paired_differences(a, b, "pickscore")  # paired by item, not by row order
    assert list(diffs["diff"]) == [0.0, 0.0, 2.5]
    cases = [
        (item_table([1.0, 2.0, 3.0], seed=8), "eval.seed must match"),
        (item_table([1.0, 2.0, 3.0], step=20), "A was evaluated at step 20, B at step 10"),
        (item_table([1.0, 2.0, 3.0], without=["seed"]), "A records no seed column"),
        (item_table([1.0, np.nan, 3.0]), "non-finite"),
        (pd.concat([item_table([1.0]), item_table([1.0], step=5)]), "mixes evaluation steps"),
    ]
    for table, message in cases:
        with pytest.raises(UnpairedError, match=message.replace("(", r"\(")):
            paired_differences(table, b, "pickscore")
    with pytest.raises(UnpairedError, match="0 items only in A, 1 only in B"):
        paired_differences(item_table([1.0, 2.0]), b, "pickscore")
    for table, message in [
        (item_table([1.0, 2.0, 3.0], without=["replica"]), "no replica"),
        (item_table([1.0, 2.0, 3.0], without=["group"]), "no group"),
        (item_table([1.0, 2.0, 3.0]).rename(columns={"pickscore": "x"}), "no pickscore"),
        (item_table([1.0]), "1 item"),
    ]:
        with pytest.raises(UnpairedError, match=message):
            paired_differences(table, b, "pickscore")


def test_seeds_stack_only_when_they_pair_alike():
    d = paired_differences(item_table([1.0, 2.0, 3.0]), item_table([0.0, 0.0, 0.0]), "pickscore")
    diffs, groups = stack_seeds({"0": d, "1": d}, ("r", "b"))
    assert diffs.shape == (2, 3) and list(groups) == ["g"] * 3
    with pytest.raises(UnpairedError, match=r"different numbers of items \{'0': 3, '1': 2\}"):
        stack_seeds({"0": d, "1": d.iloc[:2]}, ("r", "b"))
    other = d.assign(group=["x", "y", "z"])
    with pytest.raises(UnpairedError, match="other prompt groups"):
        stack_seeds({"0": d, "1": other}, ("r", "b"))
    seeds, note = shared_seeds({"0", "1", "2"}, {"0", "1"}, ("r", "b"))
    assert seeds == ["0", "1"] and note.startswith("seeds ['2'] only in r")


def test_compare_gives_both_levels_labelled():
    rng = np.random.default_rng(70)
    setting, checkpoint = compare(a_a(rng, 3, 200, 0.1), metric="eval/reward", n_boot=200)
    assert (setting.level, checkpoint.level) == ("setting", "checkpoint")
    assert setting.delta == pytest.approx(checkpoint.delta)
    assert 0 <= setting.items_higher <= 1 and math.isinf(checkpoint.df)


def test_a_sweep_whose_rows_do_not_pair_gets_a_note_not_a_failure(tmp_path):
    """Two runs of one row and seed (a swept setting): the report says why there is no paired
    table instead of failing a sweep that already ran."""
    from analysis.compare import paired_report

    runs = pd.DataFrame(
        {
            "tags.distar.label": ["a", "a", "b"],
            "tags.distar.seed": ["0", "0", "0"],
            "run_id": ["r1", "r2", "r3"],
            "status": "FINISHED",
            "tags.distar.final_step": "10",
        }
    )
    text, table = paired_report(
        runs, f"sqlite:///{tmp_path}/none.db", tmp_path, ("parti/pickscore",)
    )
    assert table.empty and text.startswith("no paired table: a row has several runs per seed")
    assert (tmp_path / "paired.md").read_text().startswith("no paired table")


def test_the_report_pairs_rows_seed_with_seed_and_says_what_it_left_out(monkeypatch):
    """row_comparisons on a sweep's runs (per-item tables as MLflow returns them): both levels
    with a level column, the steps compared (a trained row against the untrained init at step
    0), a seed that one row lacks named and left out, two rows run to other steps refused in
    their cell, and the verdicts from the setting level only."""
    import analysis.compare as compare_module
    from analysis.paired_table import verdicts

    rng = np.random.default_rng(80)
    v = values(rng, 3, 3, 300, 0.05, [0.0, 2.0, 0.0])
    steps = {"init": 0, "good": 50, "late": 40}
    tables = {
        f"{row}-{seed}": item_table(v[i, seed], seed=seed, step=steps[row])
        for i, row in enumerate(steps)
        for seed in range(3)
    }
    monkeypatch.setattr(compare_module, "samples", lambda client, run, bench: tables[run])
    runs = pd.DataFrame(
        [
            {
                "tags.distar.label": row,
                "tags.distar.seed": str(seed),
                "run_id": f"{row}-{seed}",
                "status": "FINISHED",
            }
            for row in steps
            for seed in range(3)
            if (row, seed) != ("late", 2)
        ]
    )
    table = compare_module.row_comparisons(None, runs, ["eval/pickscore"], "init", True)
    assert set(table["level"]) == {"setting", "checkpoint"}
    setting = table[table["level"] == "setting"].set_index(["row", "baseline"])
    good = setting.loc["good", "init"]
    assert good["steps"] == "50 vs 0" and good["n_seeds"] == 3 and good["p_adj"] < 0.05
    late = setting.loc["late", "init"]
    assert late["n_seeds"] == 2 and late["note"].startswith("seeds ['2'] only in init")
    other = table[table["row"].isin(["good", "late"]) & table["baseline"].isin(["good", "late"])]
    assert len(other) == 1 and other["n_seeds"].iloc[0] == 0  # 40 against 50 steps: no pair
    assert "was evaluated at step" in other["note"].iloc[0], other["note"].iloc[0]
    cells = verdicts(table)
    assert cells["good"] == "▲ eval/pickscore" and cells["late"].startswith("no verdict: 2 seed")


def test_analysis_compare_marks_only_the_setting_level():
    """Two rows, 3 seeds, a large effect on one metric: the printed setting level marks it;
    the checkpoint level, which calls far more different, never marks."""
    from analysis.compare import both_levels, markdown
    from analysis.paired_table import Found

    rng = np.random.default_rng(90)
    found = [
        Found("A", "B", "eval/m0", a_a(rng, 3, 300, 0.05, shift=2.0)),
        Found("A", "B", "eval/m1", a_a(rng, 3, 300, 0.3)),
    ]
    text = markdown(both_levels(found, n_boot=200))
    setting, checkpoint = text.split("### checkpoint level")
    assert "| eval/m0 ▲ |" in setting and "| eval/m1 |" in setting
    assert "▲" not in checkpoint and "▼" not in checkpoint
