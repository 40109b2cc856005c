"""What writes a trial's curves, evaluations, benchmark tables and final metric table into its
MLflow run: a training-loop callback that the trial driver feeds from the records rank 0 writes
(:class:`~distar.raytune.forward.RecordForwarder`), so no training worker imports MLflow or
waits on a tracking store."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from distar.evaluation.mlflow_tables import log_benchmark
from distar.runtime.callbacks import Callback
from distar.track import tracking
from distar.track.tracking import (
    FINAL_STEP_TAG,
    TRACKING_ERRORS,
    UNLOGGED,
    log_table,
    logged_steps,
)


class MlflowLogger(Callback):
    """Callback: curves, eval metrics, sample plots, benchmark tables, final metric table.

    It never stops the run: what the tracking store refuses (down, read-only, unreachable) is
    kept in memory and in ``unlogged.jsonl`` beside the run's outputs, retried at every later
    report, and whatever is still unlogged at the end stays in that file (the sweep lists it).
    Steps the run already holds (a restarted trial replaying from its checkpoint) are skipped."""

    def __init__(
        self, tracking_uri: str, run_id: str, table_row: dict[str, Any], out_dir: Path
    ) -> None:
        self.client = tracking.client(tracking_uri)
        self.run_id = run_id
        self.table_row = table_row  # identifying columns of the final table (label, seed, ...)
        self.spool = Path(out_dir) / UNLOGGED
        self.pending: list = []  # mlflow.entities.Metric
        self.pending_calls: list[tuple[str, tuple]] = []  # artifacts, tables, tags
        self.logged: dict[str, int] | None = {}  # None: the run's history could not be read
        self.resumed = 0
        self.final_step: str | None = None
        self.warned = False

    def on_train_start(self, step: int, total_steps: int) -> None:
        self.resumed = step
        try:
            self.logged, self.final_step = logged_steps(self.client, self.run_id)
        except TRACKING_ERRORS as error:
            self._warn(error)
            self.logged = None

    def _held(self, key: str, step: int) -> bool:
        """The run holds ``key`` at ``step`` already: an earlier attempt logged it (with its
        history unread, everything up to the step this attempt resumed at counts as held)."""
        if self.logged is None:
            return step <= self.resumed
        return step <= self.logged.get(key, -1)

    def _evaluation_held(self, step: int) -> bool:
        """The run holds the world's evaluation at ``step`` (its metrics, so its items and plot)."""
        if self.logged is None:
            return step <= self.resumed
        return step <= max((v for k, v in self.logged.items() if k.startswith("eval/")), default=-1)

    def _warn(self, error: BaseException) -> None:
        if not self.warned:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            print(
                f"MLflow: logging failed ({first}); training goes on, retrying, unlogged "
                f"values kept in {self.spool}",
                file=sys.stderr,
                flush=True,
            )
            self.warned = True

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [
            tracking.metric(k, float(v), now, step)
            for k, v in metrics.items()
            if math.isfinite(v) and not self._held(k, step)
        ]
        self.flush()

    def _call(self, method: str, *args: Any) -> None:
        self.pending_calls.append((method, args))
        self.flush()

    def flush(self) -> None:
        """Send everything pending; on a tracking error keep it (and its spool file)."""
        try:
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:1000])
                del self.pending[:1000]
            while self.pending_calls:
                method, args = self.pending_calls[0]
                getattr(self.client, method)(self.run_id, *args)
                self.pending_calls.pop(0)
        except TRACKING_ERRORS as error:
            self._warn(error)
        self._write_spool()

    def _write_spool(self) -> None:
        if not (self.pending or self.pending_calls):
            self.spool.unlink(missing_ok=True)
            return
        lines = [{"metric": m.key, "value": m.value, "step": m.step} for m in self.pending]
        lines += [
            {"call": method, "args": [str(a) for a in args]} for method, args in self.pending_calls
        ]
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        self.spool.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._metrics(metrics, step)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        self._metrics({f"eval/{k}": v for k, v in metrics.items()}, step)
        if self._evaluation_held(step):
            return
        for path in artifacts.values():
            self._call("log_artifact", str(path), "plots")

    def on_items(self, step: int, name: str, rows) -> None:
        """The world's per-sample values, appended (with their step) to the table a benchmark's
        would be: ``eval/<name>_samples.json``. Not spooled (a table, not a metric): a failed
        write is said and tagged, as a benchmark's is."""
        if self._evaluation_held(step):  # an earlier attempt appended these rows
            return
        try:
            log_table(self.client, self.run_id, rows.assign(step=step), f"eval/{name}_samples.json")
        except TRACKING_ERRORS as error:
            self._warn(error)
            self._call("set_tag", f"distar.unlogged_items.{name}", step)

    def on_benchmarks(self, step: int, results: list) -> None:
        """Per-prompt and per-group tables (rows carry the step: later evaluations append),
        summary metrics with bootstrap CIs, an image grid per benchmark."""
        for result in results:
            if self._held(next(iter(result.summary), ""), step):
                continue  # a replayed evaluation: its tables are in the run already
            stepped = dataclasses.replace(result, rows=result.rows.assign(step=step))
            try:
                log_benchmark(self.client, self.run_id, stepped, step)
            except TRACKING_ERRORS as error:  # tables and images are not spooled: say so
                self._warn(error)
                self._call("set_tag", f"distar.unlogged_benchmark.{result.benchmark}", step)

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        import pandas as pd

        if self.final_step != str(step):  # not a replay of an end already logged
            row = {**self.table_row, "step": step, **metrics}
            self._call("log_table", pd.DataFrame([row]), "metrics_table.json")
            self._call("set_tag", FINAL_STEP_TAG, str(step))
