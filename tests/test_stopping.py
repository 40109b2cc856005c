"""The paired stopper's promise (distar/track/stopping.py): over a whole search, any trial as good
as the best, in expectation, is stopped with probability <= alpha -- with the best chosen among 8
trials on the very items tested, each trial one training run (its own effect, sd run_sd),
skewed per-item noise whose differences are skewed too, and every evaluation the trainer
actually makes.

Trials are simulated (no Ray, no files; the model of benchmarks/paired_calibration.py, which
prints these rates) through the real :class:`StopRule`; the Ray wrapper is
held to the same rule on files in ``test_the_paired_stopper_pairs_on_files``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import distar.track.stopping as stopping
from benchmarks.paired_calibration import false_stops, pair, search, trial_items
from distar.config.tree import TrainConfig
from distar.track.stopping import StopRule

ALPHA = 0.05


def test_one_decision_stops_at_alpha_with_run_effects_and_skew():
    """Two trials, one evaluation, one rival: the stop rate is alpha (a band of 3 binomial sds;
    skewed differences, run effects 3x the items' standard error); p / 1.5 is outside it."""
    rng = np.random.default_rng(0)
    skew = np.array([1.0, -1.0])  # their difference is skewed (both tails one way)
    n, rates = 4000, {}
    original = stopping.below_p
    for scale in (1.0, 1.5):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(stopping, "below_p", lambda d, sd, s=scale: original(d, sd) / s)
            hits = 0
            for _ in range(n):
                rule = StopRule(ALPHA, 1, 0.15, pair, 1)
                x = next(trial_items(rng, 2, StopRule.MIN_ITEMS, 0.15, skew, np.zeros(2), 1))
                rule(0, 1, float(x[0].mean()), x[0])
                hits += rule(1, 1, float(x[1].mean()), x[1]) is not None
        rates[scale] = hits / n
    half = 3 * math.sqrt(ALPHA * (1 - ALPHA) / n)
    assert abs(rates[1.0] - ALPHA) <= half, rates
    assert abs(rates[1.5] - ALPHA) > half, f"p / 1.5 stopped at {rates[1.5]}: cannot fail"


def test_a_whole_search_stops_an_equal_trial_at_most_at_alpha():
    """8 equal trials, the 5 evaluations steps=10 / eval_every=2 makes (the old correction
    divided by --evals 4), the best of the rivals on these items, run effects and skew: the
    share of searches that stop any trial stays within 3 binomial sds of alpha. Mutations it
    must catch: no correction for the rivals' selection; no run effect in the variance (what
    items alone cannot see)."""
    evaluations = TrainConfig(steps=10, eval_every=2).evaluations()
    assert evaluations == 5
    rng = np.random.default_rng(1)

    def bound(n: int) -> float:
        return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / n)

    _, _, anyone = false_stops(rng, 400, evaluations, 0.05, 0.05)
    assert anyone <= bound(400), anyone
    original = stopping.stop_level
    with pytest.MonkeyPatch.context() as patch:  # the level as if the incumbent were fixed
        patch.setattr(stopping, "stop_level", lambda a, e, rivals, n: original(a, e, 1, n))
        _, _, unselected = false_stops(rng, 400, evaluations, 0.05, 0.05)
    assert unselected > bound(400), f"no selection correction passed: {unselected}"
    _, _, blind = false_stops(rng, 200, evaluations, 0.05, 0.0)
    assert blind > bound(200), f"no run variance passed: {blind}"


def test_without_run_effects_skew_at_the_fewest_items_still_holds_alpha():
    """Runs that do not differ (run_sd 0): the items alone decide, skewed both ways, at the
    fewest items the rule tests on; a z-test there stopped 6.7 % of searches at 200 items."""
    rng = np.random.default_rng(3)
    _, _, anyone = false_stops(rng, 1000, 5, 0.0, 0.0)
    assert anyone <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 1000), anyone
    few = StopRule(ALPHA, 1, 0.0, pair, 1)
    few("a", 1, 1.0, np.zeros(StopRule.MIN_ITEMS - 1))
    assert few("b", 1, 0.0, -np.ones(StopRule.MIN_ITEMS - 1)) is None and few.skipped == 1


def test_a_clearly_worse_trial_is_stopped():
    """A trial 10 run sds below the others is stopped in most searches; they are not."""
    rng = np.random.default_rng(2)
    shift = np.zeros(8)
    shift[3] = -0.5
    worse = others = 0
    for _ in range(100):
        stopped = search(rng, StopRule(ALPHA, 4, 0.05, pair, 8), shift=shift)
        worse += 3 in stopped
        others += len(stopped - {3})
    assert worse >= 90 and others <= 0.05 * 700 + 3 * math.sqrt(0.05 * 700), (worse, others)


def test_the_evaluation_count_is_the_trainers_schedule():
    """TrainConfig.evaluations counts what Trainer.train does: every eval_every steps before
    the last, and the end."""
    from types import SimpleNamespace

    from distar.loop.trainer import Trainer

    for steps, every in [(10, 2), (10, 3), (12, 3), (600, 150), (7, 0), (5, 10)]:
        cfg = SimpleNamespace(config=SimpleNamespace(train=SimpleNamespace(steps=steps)))
        due = 0
        for step in range(1, steps + 1):
            cfg.step = step
            due += Trainer._due(cfg, every)
        assert TrainConfig(steps=steps, eval_every=every).evaluations() == due + 1


def test_a_rule_without_items_or_with_ties_never_stops():
    rule = StopRule(ALPHA, 1, 0.0, lambda a, b, step: None, 1)
    rule("a", 1, 1.0, None)
    assert rule("b", 1, 0.0, None) is None  # nothing pairs: never stop blind
    ties = StopRule(ALPHA, 1, 0.0, pair, 1)
    ties("a", 1, 1.0, np.ones(50))
    assert ties("b", 1, 0.5, np.ones(50)) is None  # all ties: no evidence either way
    with pytest.raises(ValueError, match="run_sd"):
        StopRule(ALPHA, 1, -1.0, pair, 1)


def write_items(folder, step: int, values: np.ndarray, seed: int = 3) -> str:
    import pandas as pd

    (folder / "items").mkdir(parents=True)
    rows = pd.DataFrame(
        {
            "prompt": "p",
            "group": "p",
            "index": np.arange(len(values)) % 4,
            "replica": np.arange(len(values)) // 4,
            "seed": seed,
            "reward": values,
            "step": step,
        }
    )
    rows.to_json(folder / "items" / "eval.jsonl", orient="records", lines=True)
    return str(folder)


def test_the_paired_stopper_pairs_on_files(tmp_path):
    pytest.importorskip("ray")
    from distar.raytune.paired_stop import PairedStopper
    from distar.raytune.spec import TRIAL_DIR

    rng = np.random.default_rng(6)
    prompt = rng.normal(0, 5.0, 400)  # what pairing cancels: a mean of 400 items alone cannot
    best = write_items(tmp_path / "best", 10, prompt + rng.normal(0, 1, 400))
    worse = write_items(tmp_path / "worse", 10, prompt - 0.5 + rng.normal(0, 1, 400))
    tied = write_items(tmp_path / "tied", 10, prompt + rng.normal(0, 1, 400))
    other = write_items(tmp_path / "other", 10, prompt - 0.5 + rng.normal(0, 1, 400), seed=9)
    stop = PairedStopper("reward", alpha=0.05, evaluations=4, run_sd=0.05, trials=6)

    def report(trial, folder, objective, step=10):
        return stop(trial, {"step": step, "objective": objective, TRIAL_DIR: folder})

    assert not report("best", best, 1.0)  # the first at a step has no incumbent
    assert report("worse", worse, 0.5) and "below best at step 10" in stop.stopped["worse"]
    assert not report("tied", tied, 0.99)  # below on its mean, not confidently so
    assert not report("other", other, 0.5)  # another eval seed: nothing pairs, never stop blind
    assert not report("late", worse, 0.5, step=20)  # alone at its step
    assert not report("above", worse, 2.0)  # above every rival on the objective: no test
    slow = PairedStopper("reward", alpha=0.05, evaluations=4, run_sd=1.0, trials=6)
    slow("best", {"step": 10, "objective": 1.0, TRIAL_DIR: best})
    # 0.5 below, but two runs of one setting differ by that much: not stopped
    assert not slow("worse", {"step": 10, "objective": 0.5, TRIAL_DIR: worse})
