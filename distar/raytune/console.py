"""A sweep console a person can read: one line per finished or failed trial, each carrying the
sweep's progress (done / running / failed of the total, elapsed, ETA), instead of Tune's
per-iteration status tables (``--verbose`` brings those back). Errors print in full."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from distar.config.benchmarks import logged_name
from distar.config.keys import K


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class SweepConsole(Callback):
    def __init__(self, total: int | None, metrics: tuple[str, ...]) -> None:
        # no stream held: Tune pickles its callbacks with the experiment state
        self.total, self.metrics = total, metrics
        self.started = time.monotonic()
        self.running = self.done = self.failed = 0

    def progress(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = self.done + self.failed
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and finished:
            eta = f", ETA {clock(elapsed / finished * (self.total - finished))}"
        return (
            f"[{finished}{total} done, {self.running} running, {self.failed} failed, "
            f"{clock(elapsed)}{eta}]"
        )

    def name(self, trial: Any) -> str:
        spec = trial_spec(trial)
        label = spec.get("label") or trial.trial_id
        if spec.get("paper") and not spec.get("key"):  # a searcher's draw: its values name it
            flat = spec.get("flat_config", {})
            drawn = [f"paper.{k} {v:.3g}" for k, v in spec["paper"].items()]
            drawn += [f"huber_c {flat[K.loss.huber_c]:.3g}"] if K.loss.huber_c in flat else []
            drawn += [str(flat[K.loss.guidance])] if K.loss.guidance in flat else []
            label = f"{label} {trial.trial_id} ({', '.join(drawn)})"
        return f"{label} · seed {spec['seed']}" if spec.get("seed") is not None else label

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running += 1

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running -= 1
        self.done += 1
        result = trial.last_result or {}
        logged = {m: logged_name(m) for m in self.metrics}
        shown = [f"{m} {result[logged[m]]:.4g}" for m in self.metrics if logged[m] in result]
        steps = (trial_spec(trial).get("flat_config") or {}).get(K.train.steps)
        how = "finished"
        if steps and result.get("step", steps) < steps:  # a scheduler (ASHA) stopped it
            how = f"stopped at step {result['step']}/{steps}"
        print(
            f"{self.progress()} {how} {self.name(trial)}: {', '.join(shown)}",
            file=sys.stdout,
            flush=True,
        )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.running -= 1  # it starts again (on_trial_start)
        print(
            f"{self.progress()} retrying {self.name(trial)}: {reason(trial.error_file)}",
            file=sys.stdout,
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running -= 1
        self.failed += 1
        print(
            f"{self.progress()} FAILED {self.name(trial)}: {reason(trial.error_file)}",
            file=sys.stdout,
            flush=True,
        )


def trial_spec(trial: Any) -> dict[str, Any]:
    """The :class:`~distar.raytune.spec.TrialSpec` fields a Tune trial was started with."""
    return (trial.config or {}).get("trial", {})


def reason(error_file: str | None) -> str:
    """The error's own line from Tune's error file (the traceback stays in that file)."""
    if not error_file or not Path(error_file).exists():
        return "(no error file)"
    lines = [line.strip() for line in Path(error_file).read_text().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line and not line.startswith("ray.exceptions"):
            return f"{line[:300]} (traceback: {error_file})"
    return f"{lines[-1][:300] if lines else ''} (traceback: {error_file})"
