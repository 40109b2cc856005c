"""MLflow bookkeeping for sweeps: one parent run per sweep, one child run per trial.

Everything goes through an explicit ``MlflowClient`` and run ids, never MLflow's global "active
run", because trials log from Ray worker processes. Runs are found again by tags, so a restarted
sweep or trial continues its own run instead of creating a duplicate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

from distar.callbacks import Callback

SWEEP_TAG = "distar.sweep"
TRIAL_TAG = "distar.trial"
LABEL_TAG = "distar.label"
FINAL_STEP_TAG = "distar.final_step"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch
UNLOGGED = "unlogged.jsonl"  # what the tracking store refused, beside a run's outputs
# what a tracking store that is down, read-only or unreachable raises through MlflowClient
TRACKING_ERRORS = (MlflowException, RequestException, SQLAlchemyError, OSError)


def default_tracking_uri(root: Path) -> str:
    """A local SQLite store (MLflow 3 refuses the file store by default) under ``root``."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def mlflow_ui_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's UI. MLflow 3 opens every experiment on the GenAI
    overview unless the browser chose "Model training" before; the link chooses it."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, creating it with an explicit artifact location if it is new
    (otherwise artifacts would land in whatever directory each Ray worker runs in)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if artifact_root is not None:
        location = (artifact_root / name).resolve().as_uri()
    # a training experiment: MLflow's UI opens it on the runs table, not the GenAI overview
    return client.create_experiment(
        name, location, tags={EXPERIMENT_KIND_TAG: "custom_model_development"}
    )


def find_run(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=query, max_results=2)
    if len(runs) > 1:
        raise RuntimeError(f"more than one MLflow run carries the tags {tags}")
    return runs[0].info.run_id if runs else None


def find_or_create_run(
    client: MlflowClient, experiment_id: str, tags: dict[str, str], name: str
) -> tuple[str, bool]:
    """``(run_id, created)``: the run with exactly these tags, or a new one."""
    run_id = find_run(client, experiment_id, tags)
    if run_id is not None:
        return run_id, False
    run = client.create_run(experiment_id, tags={**tags, RUN_NAME_TAG: name}, run_name=name)
    return run.info.run_id, True


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Flat config keys keep their dotted groups (``loss.reward_scale``); logged once per run."""
    existing = client.get_run(run_id).data.params
    items = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in existing]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[i : i + BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])


def logged_steps(client: MlflowClient, run_id: str) -> tuple[dict[str, int], str | None]:
    """The last step of every metric already in the run (a restarted trial replays the steps
    since its last checkpoint, and those must not be logged twice) and its final-step tag."""
    run = client.get_run(run_id)
    last = {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in run.data.metrics}
    return last, run.data.tags.get(FINAL_STEP_TAG)


class MlflowLogger(Callback):
    """Training-loop callback: curves, eval metrics, sample plots, final metric table.

    It never stops training: what the tracking store refuses (down, read-only, unreachable) is
    kept in memory and in ``unlogged.jsonl`` beside the run's outputs, retried at every later
    report, and whatever is still unlogged at the end stays in that file (the sweep lists it).
    Steps the run already holds (a restarted trial replaying from its checkpoint) are skipped."""

    def __init__(
        self, tracking_uri: str, run_id: str, table_row: dict[str, Any], out_dir: Path
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.table_row = table_row  # identifying columns of the final table (label, seed, ...)
        self.spool = Path(out_dir) / UNLOGGED
        self.pending: list[Metric] = []
        self.pending_calls: list[tuple[str, tuple]] = []  # artifacts, tables, tags
        self.logged: dict[str, int] = {}
        self.final_step: str | None = None
        self.warned = False

    def on_train_start(self, step: int, total_steps: int) -> None:
        self.started = time.perf_counter()
        try:
            self.logged, self.final_step = logged_steps(self.client, self.run_id)
        except TRACKING_ERRORS as error:
            self._warn(error)

    def _warn(self, error: BaseException) -> None:
        if not self.warned:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            print(f"MLflow: logging failed ({first}); training goes on, retrying, unlogged "
                  f"values kept in {self.spool}", file=sys.stderr, flush=True)  # fmt: skip
            self.warned = True

    def _metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.pending += [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if math.isfinite(v) and step > self.logged.get(k, -1)
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
        lines += [{"call": method, "args": [str(a) for a in args]} for method, args in
                  self.pending_calls]  # fmt: skip
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        self.spool.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._metrics(metrics, step)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        self._metrics({f"eval/{k}": v for k, v in metrics.items()}, step)
        for path in artifacts.values():  # same name at the same step: a replay overwrites
            self._call("log_artifact", str(path), "plots")

    def on_benchmarks(self, step: int, results: list) -> None:
        """Per-prompt and per-group tables (rows carry the step: later evaluations append),
        summary metrics with bootstrap CIs, an image grid per benchmark."""
        from distar.evaluation.tracking import log_benchmark

        for result in results:
            if step <= self.logged.get(next(iter(result.summary), ""), -1):
                continue  # a replayed evaluation: its tables are in the run already
            stepped = dataclasses.replace(result, rows=result.rows.assign(step=step))
            try:
                log_benchmark(self.client, self.run_id, stepped, step)
            except TRACKING_ERRORS as error:  # tables and images are not spooled: say so
                self._warn(error)
                self._call("set_tag", f"distar.unlogged_benchmark.{result.benchmark}", step)

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        import pandas as pd

        seconds = time.perf_counter() - self.started  # the loop alone, for overhead benchmarks
        self._metrics({"train/seconds": seconds}, step)
        if self.final_step != str(step):  # not a replay of an end already logged
            row = {**self.table_row, "step": step, **metrics}
            self._call("log_table", pd.DataFrame([row]), "metrics_table.json")
            self._call("set_tag", FINAL_STEP_TAG, str(step))
