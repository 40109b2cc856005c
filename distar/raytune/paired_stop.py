"""Stopping a searched trial on a paired test, as Optuna's ``WilcoxonPruner`` prunes on shared
instances: at each evaluation, the trial's per-sample values are paired with those of the best
trial so far at the same step (same prompts, same noise: a search's trials share ``train.seed``
and so the evaluation seed), and the trial stops when it is confidently worse.

ASHA compares one number per trial at a rung and stops the bottom half, however close; this
stops only what the units show to be worse, at a level set so that a trial as good as the
incumbent is stopped at some evaluation with probability <= ``alpha`` (Bonferroni over its
evaluations, :func:`distar.paired.stop_level`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Stopper

from distar.paired import (
    UnpairedError,
    confidently_worse,
    paired_differences,
    read_units,
    stop_level,
    unit_metric,
)
from distar.raytune.spec import TRIAL_DIR


class PairedStopper(Stopper):
    """``stop=`` for a search: trial results carry ``step``, ``objective`` (higher is better)
    and :data:`TRIAL_DIR`; ``metric`` is the objective's metric (``reward``,
    ``parti/imagereward``), whose per-unit values the test pairs."""

    def __init__(self, metric: str, alpha: float = 0.05, decisions: int = 1) -> None:
        self.bench, _, self.name = unit_metric(metric).partition("/")
        self.level = stop_level(alpha, decisions)
        self.at_step: dict[int, dict[str, tuple[float, str]]] = {}  # step -> trial -> (obj, dir)
        self.stopped: dict[str, str] = {}  # trial -> why, for the console and the tests

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        step, value, folder = result.get("step"), result.get("objective"), result.get(TRIAL_DIR)
        if step is None or value is None or folder is None:
            return False
        rivals = {t: v for t, v in self.at_step.setdefault(step, {}).items() if t != trial_id}
        self.at_step[step][trial_id] = (float(value), str(folder))
        if not rivals:
            return False
        best = max(rivals, key=lambda t: rivals[t][0])
        if rivals[best][0] <= value:
            return False  # as good as the incumbent at this step on the objective itself
        mine = read_units(Path(folder), self.bench, step)
        theirs = read_units(Path(rivals[best][1]), self.bench, step)
        if mine is None or theirs is None or self.name not in mine or self.name not in theirs:
            return False  # nothing to pair on: never stop blind
        try:
            diffs = paired_differences(mine, theirs, self.name)["diff"].to_numpy()
        except UnpairedError:
            return False  # other prompts or noise (a different eval seed): no paired verdict
        if confidently_worse(diffs, self.level):
            units = len(diffs)
            self.stopped[trial_id] = f"worse than {best} at step {step} (paired, {units} units)"
            return True
        return False

    def stop_all(self) -> bool:
        return False
