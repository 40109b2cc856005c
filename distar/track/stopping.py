"""When a searched trial may be stopped on its per-sample values: the rule behind
:class:`distar.raytune.paired_stop.PairedStopper`, without Ray or files.

The promise, over a whole search: the probability that any trial whose setting is, in
expectation, as good as the best trial's is stopped at any evaluation is <= ``alpha``. Five
things would break it, and each is counted:

- **best-of-K selection**: the incumbent is the best of the other trials on these very items,
  so it is lucky. The trial is tested against every rival above it on the objective, each at
  the level divided by the number of rivals present (a union bound holds whichever rival is
  chosen, however it was chosen).
- **the training-run effect**: a trial is one training run; another run of the same setting
  lands a little differently (sd ``run_sd`` of the metric's mean, a grid's variance split:
  :func:`distar.track.paired.variance_split`). Items cannot see that, so the variance of a paired
  mean difference is ``item variance / items + 2 run_sd^2`` (two runs).
- **skewed differences**: a test of the mean (t on the paired mean difference, at least
  ``StopRule.MIN_ITEMS`` items), not of the pseudo-median as Wilcoxon's signed-rank test is.
- **repeated looks**: Bonferroni over the evaluations the trial actually makes
  (:meth:`distar.config.tree.TrainConfig.evaluations`).
- **many trials**: Bonferroni over the search's trials (its ``--samples``), so the promise
  holds for the search, not only for each trial.

The bound is a union bound, so the realised rate sits below ``alpha`` when the looks and the
rivals are correlated (they are); ``benchmarks/paired_calibration.py`` measures it and
``tests/test_stopping.py`` holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
from scipy import special


def stop_level(alpha: float, evaluations: int, rivals: int, trials: int) -> float:
    """The level of one test: ``alpha`` over the trial's evaluations, the rivals present and
    the search's trials."""
    return alpha / (max(1, evaluations) * max(1, rivals) * max(1, trials))


def below_p(diffs: np.ndarray, run_sd: float) -> float:
    """One-sided p of "the trial's setting is below the rival's", from the paired per-item
    differences (trial - rival): t on their mean, whose variance adds the two runs' own effects
    to the items' (known, so Welch-Satterthwaite degrees of freedom come from the items' part
    alone: a handful of items cannot pass for a normal tail at the levels a search tests)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    n = len(diffs)
    item_var = float(diffs.var(ddof=1)) / n  # the items' part of the mean's variance
    var = item_var + 2.0 * run_sd**2
    if var == 0.0:
        return 0.5
    df = math.inf if item_var == 0.0 else var**2 / (item_var**2 / (n - 1))
    t = float(diffs.mean()) / math.sqrt(var)
    return float(special.ndtr(t) if math.isinf(df) else special.stdtr(df, t))


class StopRule:
    """The paired stopper's bookkeeping: every trial's objective and item handle per step; a
    trial reporting at a step is tested against the rivals that reported there before it.
    ``pair(mine, theirs, step)`` gives the paired per-item differences (None: nothing pairs;
    never stop blind); higher objectives are better; ``trials``: how many the search runs."""

    # fewer: a mean of skewed per-item differences is too far from normal in the far tail a
    # search tests at (8 equal trials, differences of opposite exponentials, no run effect:
    # 6.5 % of searches stopped one at 100 items, 5.7 % at 200, 3.9 % at 400)
    MIN_ITEMS = 400

    def __init__(
        self,
        alpha: float,
        evaluations: int,
        run_sd: float,
        pair: Callable[[Any, Any, int], np.ndarray | None],
        trials: int,
    ) -> None:
        if (
            not 0 < alpha < 1
            or evaluations < 1
            or trials < 1
            or not (run_sd >= 0 and math.isfinite(run_sd))
        ):
            raise ValueError(
                f"stop rule: alpha {alpha} in (0, 1), evaluations {evaluations} "
                f">= 1, trials {trials} >= 1 and run_sd {run_sd} >= 0 finite are "
                "needed"
            )
        self.alpha, self.evaluations, self.run_sd, self.pair = alpha, evaluations, run_sd, pair
        self.trials = trials
        self.at_step: dict[int, dict[Hashable, tuple[float, Any]]] = {}
        self.stopped: dict[Hashable, str] = {}  # trial -> why, for the console and the tests
        self.skipped = 0  # comparisons not made: nothing paired, or fewer than MIN_ITEMS

    def __call__(self, trial: Hashable, step: int, objective: float, handle: Any) -> str | None:
        """Why ``trial`` stops at ``step`` (None: it goes on)."""
        rivals = {t: v for t, v in self.at_step.setdefault(step, {}).items() if t != trial}
        self.at_step[step][trial] = (float(objective), handle)
        level = stop_level(self.alpha, self.evaluations, len(rivals), self.trials)
        above = sorted((t for t in rivals if rivals[t][0] > objective), key=lambda t: -rivals[t][0])
        for rival in above:
            diffs = self.pair(handle, rivals[rival][1], step)
            if diffs is None or len(diffs) < self.MIN_ITEMS:
                self.skipped += 1
                continue
            p = below_p(diffs, self.run_sd)
            if p < level:
                why = (
                    f"below {rival} at step {step} (paired mean {float(np.mean(diffs)):+.4g} "
                    f"over {len(diffs)} items, p {p:.2g} < {level:.2g})"
                )
                self.stopped[trial] = why
                return why
        return None
