"""Stopping a searched trial on a paired test of the mean (:class:`distar.track.stopping.StopRule`):
at each evaluation, the trial's per-sample values are paired with those of each trial above it at
the same step (same prompts, same noise: a search's trials share ``train.seed`` and so the
evaluation seed), and the trial stops when it is confidently below one of them -- by more than
two training runs of one setting would differ (``run_sd``).

ASHA compares one number per trial at a rung and stops the bottom half, however close; this
stops only what the items show to be worse, at a level set so that, over the whole search, any
trial as good as the best is stopped with probability <= ``alpha`` (selection among the
rivals, the training-run effect, the evaluations actually made and the trials all counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Stopper

from distar.raytune.spec import TRIAL_DIR
from distar.track.paired import item_metric
from distar.track.pairing import UnpairedError, paired_differences, read_items
from distar.track.stopping import StopRule


class PairedStopper(Stopper):
    """``stop=`` for a search: trial results carry ``step``, ``objective`` (higher is better)
    and :data:`TRIAL_DIR`; ``metric`` is the objective's metric (``reward``,
    ``parti/imagereward``), whose per-item values the test pairs; ``run_sd``: the sd of that
    metric's mean between training runs of one setting, in its units."""

    def __init__(
        self, metric: str, alpha: float, evaluations: int, run_sd: float, trials: int
    ) -> None:
        self.bench, _, self.name = item_metric(metric).partition("/")
        self.rule = StopRule(alpha, evaluations, run_sd, self._pair, trials)
        self._read: tuple[tuple[str, int] | None, Any] = (None, None)  # the last trial's items

    @property
    def stopped(self) -> dict[str, str]:
        return self.rule.stopped  # trial -> why

    @property
    def skipped(self) -> int:
        return self.rule.skipped  # comparisons not made (nothing paired, too few items)

    @property
    def at_step(self) -> dict[int, dict[str, tuple[float, Any]]]:
        return self.rule.at_step

    def _items(self, folder: str, step: int):
        """A trial's items at ``step``, read once: a trial is paired with every rival above it
        (its own file would otherwise be read once per rival, at every evaluation)."""
        if self._read[0] != (folder, step):
            self._read = ((folder, step), read_items(Path(folder), self.bench, step))
        return self._read[1]

    def _pair(self, mine: str, theirs: str, step: int):
        a, b = self._items(mine, step), read_items(Path(theirs), self.bench, step)
        if a is None or b is None or self.name not in a or self.name not in b:
            return None  # nothing to pair on: never stop blind
        try:
            return paired_differences(a, b, self.name)["diff"].to_numpy()
        except UnpairedError:
            return None  # other prompts or noise (a different eval seed): no paired verdict

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        step, value, folder = result.get("step"), result.get("objective"), result.get(TRIAL_DIR)
        if step is None or value is None or folder is None:
            return False
        return self.rule(trial_id, int(step), float(value), str(folder)) is not None

    def stop_all(self) -> bool:
        return False
