"""MLflow bookkeeping for sweeps: one parent run per sweep, one child run per trial.

Everything goes through an explicit ``MlflowClient`` and run ids, never MLflow's global "active
run", because trials log from Ray worker processes. Runs are found again by tags, so a restarted
sweep or trial continues its own run instead of creating a duplicate.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from distar.callbacks import Callback

SWEEP_TAG = "distar.sweep"
TRIAL_TAG = "distar.trial"
LABEL_TAG = "distar.label"
FINAL_STEP_TAG = "distar.final_step"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch


def default_tracking_uri(root: Path) -> str:
    """A local SQLite store (MLflow 3 refuses the file store by default)."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, creating it with an explicit artifact location if it is new
    (otherwise artifacts would land in whatever directory each Ray worker runs in)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if artifact_root is not None:
        location = (artifact_root / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


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


class MlflowLogger(Callback):
    """Training-loop callback: curves, eval metrics, sample plots, final metric table."""

    def __init__(self, tracking_uri: str, run_id: str, table_row: dict[str, Any]) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id
        self.table_row = table_row  # identifying columns of the final table (label, seed, ...)

    def on_train_start(self, step: int, total_steps: int) -> None:
        self.started = time.perf_counter()

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        log_metrics(self.client, self.run_id, metrics, step)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        log_metrics(self.client, self.run_id, {f"eval/{k}": v for k, v in metrics.items()}, step)
        for path in artifacts.values():
            self.client.log_artifact(self.run_id, str(path), artifact_path="plots")

    def on_benchmarks(self, step: int, results: list) -> None:
        """Per-prompt and per-group tables (rows carry the step: later evaluations append),
        summary metrics with bootstrap CIs, an image grid per benchmark."""
        from distar.evaluation.tracking import log_benchmark

        for result in results:
            stepped = dataclasses.replace(result, rows=result.rows.assign(step=step))
            log_benchmark(self.client, self.run_id, stepped, step)

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        import pandas as pd

        seconds = time.perf_counter() - self.started  # the loop alone, for overhead benchmarks
        log_metrics(self.client, self.run_id, {"time/train_seconds": seconds}, step)
        row = {**self.table_row, "step": step, **metrics}
        self.client.log_table(self.run_id, pd.DataFrame([row]), "metrics_table.json")
        self.client.log_batch(self.run_id, tags=[RunTag(FINAL_STEP_TAG, str(step))])
