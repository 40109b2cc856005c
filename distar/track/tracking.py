"""The MLflow helpers every layer above uses (sweeps, evaluation, reports): tags, experiments,
runs found by their tags, batched params and metrics, the tracking store's checks.

MLflow itself loads at the first call that needs it (a sweep's ``--dry-run`` and its refusals
import none of it). Everything goes through an explicit ``MlflowClient`` and run ids, never
MLflow's global "active run", because trials log from Ray worker processes. Runs are found
again by tags, so a restarted sweep or trial continues its own run instead of a duplicate.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distar.config.benchmarks import ROW_KEYS
from distar.config.tree import Config, ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow announces each new SQLite store's schema set-up on stderr (INFO lines); a sweep keeps
# stderr for problems, one line each
for _logger in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_logger).setLevel(logging.WARNING)

SWEEP_TAG = "distar.sweep"
TRIAL_TAG = "distar.trial"
LABEL_TAG = "distar.label"
GROUP_TAG = "distar.group"  # a grid's runs-table group: its row (at one c, when c is crossed)
FINAL_STEP_TAG = "distar.final_step"
SMOKE_TAG = "distar.smoke"  # "true" on a --smoke-test sweep's runs: they check the path only
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
PAIRED_TAG = "distar.paired"  # a child run's row verdict against the baseline (the report's)
# a child run's row: its headline metrics' mean ± 95 % CI over seeds (the runs table's group
# rows show MLflow's bare, unrounded mean)
ROW_CI_TAG = "distar.row_ci95"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # which artifacts the UI shows as tables
NOTE_TAG = "mlflow.note.content"  # a run's / an experiment's description (markdown in the UI)
# a runs-table view MLflow 3 opens from ?viewStateShareKey=KEY (the UI's own "Share" writes it)
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
# the units a run's scales are in (the report prints them)
REWARD_UNITS_TAG = "distar.reward_units"
CFG_CONVENTION_TAG = "distar.cfg_convention"
# what an evaluation run scored: "pipeline" (a released model on a diffusers pipeline; Table 1's
# rows), "" for a distar generator
EVALUATED_TAG = "distar.evaluated"
BATCH = 100  # MLflow accepts at most 100 params / 1000 metrics per log_batch
UNLOGGED = "unlogged.jsonl"  # what the tracking store refused, beside a run's outputs


def __getattr__(name: str) -> Any:
    """``TRACKING_ERRORS``: what a tracking store that is down, read-only or unreachable raises
    through MlflowClient (built on first use: it needs MLflow's exception classes)."""
    if name == "TRACKING_ERRORS":
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException
        from sqlalchemy.exc import SQLAlchemyError

        return (MlflowException, RequestException, SQLAlchemyError, OSError)
    raise AttributeError(name)


def client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` on ``uri``: the one way the project opens a tracking store (MLflow
    is imported here, on first use)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def metric(key: str, value: float, timestamp_ms: int, step: int):
    """One metric value for ``MlflowClient.log_batch``."""
    from mlflow.entities import Metric

    return Metric(key, value, timestamp_ms, step)


def runs_frame(uri: str, experiment_ids: list[str], search_filter: str):
    """The runs matching ``search_filter`` as MLflow's pandas frame (``params.*``, ``tags.*``,
    ``metrics.*`` columns)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_ids, search_filter, output_format="pandas")


def unreadable(flag: str, uri: str, error: Exception) -> ConfigError:
    """The refusal of the store ``flag`` names, which raised ``error`` when read (one of
    ``TRACKING_ERRORS``): one line with MLflow's class and the start of its message."""
    why = " ".join(str(error).split())[:160]
    return ConfigError(f"{flag}: {uri} cannot be read ({type(error).__name__}: {why})")


def finished(runs):
    """Runs of a :func:`runs_frame` that finished training (status FINISHED and the final-step
    tag): the only seeds a table counts, the only observations a warm start takes."""
    done = runs["status"] == "FINISHED"
    if f"tags.{FINAL_STEP_TAG}" in runs:
        tag = runs[f"tags.{FINAL_STEP_TAG}"]
        done &= tag.notna() & (tag != "")
    return done


def setting_label(label: str, values: dict[str, object]) -> str:
    """A row at one setting of its swept parameters, ``label · loss.huber_c=0.05``: the report's
    row name, and the runs-table group (``GROUP_TAG``) of a grid that crosses them."""
    shown = ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in values.items())
    return f"{label} · {shown}" if shown else label


def default_tracking_uri(root: Path) -> str:
    """A local SQLite store (MLflow 3 refuses the file store by default) under ``root``."""
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


LOCAL_UI = "http://127.0.0.1:5000"


def ui_server(uri: str) -> tuple[str, str | None]:
    """The address a tracking store's UI links start with, and the command that serves it over
    a local store (None: ``uri`` is a server already). ``--app-name distar``: MLflow's server
    with its UI opening in the training layout (:mod:`distar.track.mlflow_app`); ``--workers
    1``: one person's browser on one machine, served by one process (MLflow's default 4 each
    import MLflow: measured on 2 cores, /health answered after ~11 s, ~6 s with one)."""
    if uri.startswith("http"):
        return uri, None
    port = LOCAL_UI.rpartition(":")[2]
    return LOCAL_UI, (
        f"mlflow server --app-name distar --backend-store-uri {uri} --host 127.0.0.1 --port {port}"
        " --workers 1"
    )


def mlflow_ui_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in MLflow's UI. MLflow 3 opens every experiment on the GenAI
    overview unless the browser chose "Model training" before; the link chooses it."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def browser_safe(rows):
    """A table as it is logged to MLflow: its metric columns first (what a reader looks for),
    the keys after them; identifiers that a browser would round as 64-bit JSON integers (noise
    seeds: 8849405741441832926 showed as ...833000) as strings."""
    keys = [c for c in rows.columns if c in ROW_KEYS]
    rows = rows[[c for c in rows.columns if c not in keys] + keys]
    return rows.astype({"seed": str}) if "seed" in rows else rows


def run_url(server: str, experiment_id: str, run_id: str, page: str = "") -> str:
    """A run's page (``page``: e.g. ``artifacts/report/table2.md``) in MLflow's training view:
    without ``workflowType`` MLflow 3 shows a run in its GenAI layout (an "Evaluations" trail,
    the GenAI sidebar) unless the browser chose "Model training" before."""
    path = f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/{page}" if page else "")
    root = f"{server.rstrip('/')}/" if server else ""  # "": a link within the UI's own page
    return f"{root}{path}?workflowType=machine_learning"


def read_table(client: MlflowClient, run_id: str, artifact_file: str):
    """A run's logged table (MLflow's table JSON) as a DataFrame, its cells as the JSON holds
    them (no type guessing: string seeds stay strings); None if the run has no such file."""
    import json
    import os
    import tempfile

    import pandas as pd

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a clean stderr
    folder = artifact_file.rpartition("/")[0] or None
    if artifact_file not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(client.download_artifacts(run_id, artifact_file, tmp)).read_text())
    return pd.DataFrame(data["data"], columns=data["columns"])


def log_table(client: MlflowClient, run_id: str, rows, artifact_file: str) -> None:
    """``rows`` (a DataFrame) appended to the run's table ``artifact_file`` (MLflow's table JSON,
    listed as a table like ``MlflowClient.log_table``'s), :func:`browser_safe`. MLflow's own
    append reads the earlier rows back with pandas' type guessing, which turns string seeds into
    64-bit integers again; :func:`read_table` keeps them as written."""
    import json
    import tempfile

    import pandas as pd

    earlier = read_table(client, run_id, artifact_file)
    rows = browser_safe(rows if earlier is None else pd.concat([earlier, rows], ignore_index=True))
    folder, _, name = artifact_file.rpartition("/")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        rows.to_json(path, orient="split", index=False, date_format="iso")
        client.log_artifact(run_id, str(path), folder or None)
    if earlier is not None:
        return  # listed as a table when it was first written
    listed = json.loads(client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
    if (entry := {"path": artifact_file, "type": "table"}) not in listed:
        client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, entry]))


def runs_view_url(server: str, experiment_id: str, key: str) -> str:
    """The runs table in the view :func:`share_runs_view` stored under ``key``."""
    return (
        f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"
        "&workflowType=machine_learning"
    )


RUN_NAME_COLUMN = "attributes.`Run Name`"  # the runs table's own column ids (MLflow 3.17)


def share_runs_view(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    search_filter: str,
    columns: list[str],
    group_by_tag: str,
    order_by: str,
    tag_columns: tuple[str, ...] = (),
    widths: dict[str, int] | None = None,
) -> None:
    """Store a runs-table view on the experiment as MLflow 3.17's UI reads one (its
    ``mlflow.sharedViewState.<key>`` tag: search facets and UI state, JSON): runs matching
    ``search_filter`` grouped by ``group_by_tag`` (group rows show the mean), the run name,
    ``tag_columns`` and the metric ``columns`` first, in that order, sorted by ``order_by``
    descending. ``widths``: pixels per column id (``RUN_NAME_COLUMN``, ``tags.`NAME```,
    ``metrics.`NAME```), e.g. a run-name column wide enough for its group names. MLflow
    applies the view on a page load whose URL carries no search facets of its own. Stored in
    the envelope the UI's "Views" menu lists (named ``key``), which a link opens too."""
    import json

    shown = [f"tags.`{t}`" for t in tag_columns] + [f"metrics.`{c}`" for c in columns]
    state = {
        "searchFilter": search_filter,
        "orderByKey": f"metrics.`{order_by}`",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": shown,
        # the UI applies widths only to the columns it orders (and orders only these)
        "columnOrder": [RUN_NAME_COLUMN, *shown],
        "columnWidths": dict(widths or {}),
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": group_by_tag}],
        },
        "groupsExpanded": {},
        "viewMaximized": False,
        "runListHidden": False,
        "useGroupedValuesInCharts": True,
    }
    now = int(time.time() * 1000)
    view = {"name": key, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key, json.dumps(view))


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
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    items = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in existing]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[i : i + BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

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


def local_artifact_root(tracking_uri: str) -> Path | None:
    """For a SQLite store, artifacts beside the database (else MLflow picks the working dir)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return db.parent.resolve() / "mlartifacts"


def missing_store(tracking_uri: str) -> str | None:
    """The path of a local (SQLite or file) store that does not exist, else None."""
    for prefix in ("sqlite:///", "file://"):
        if tracking_uri.startswith(prefix):
            path = Path(tracking_uri.removeprefix(prefix))
            return None if path.exists() else str(path)
    if "://" not in tracking_uri and not Path(tracking_uri).exists():
        return tracking_uri
    return None


class TrackingStoreError(RuntimeError):
    """The tracking store is unreachable or refuses writes: nothing can be recorded."""


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking server answers its health check within ``timeout`` (MLflow's own client would
    retry for minutes first)."""
    import requests

    if not uri.startswith(("http://", "https://")):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except requests.RequestException as error:
        reason = type(error).__name__
        raise TrackingStoreError(f"--tracking-uri {uri}: unreachable ({reason})") from None


def require_store(uri: str, flag: str, hint: str = "") -> None:
    """A store to read: a local one that does not exist is refused naming ``flag`` (reading
    never creates one), then a server must answer (:func:`check_tracking_server`)."""
    missing = missing_store(uri)
    if missing:
        raise ConfigError(f"{flag}: no MLflow store at {missing}{hint}")
    check_tracking_server(uri)


def unit_tags(config: Config) -> dict[str, str]:
    """The units of a run's reward and CFG scales as tags: the world's reward unit
    (:meth:`WorldConfig.reward_unit`) and ``loss.cfg_convention``."""
    return {
        REWARD_UNITS_TAG: config.world.reward_unit(),
        CFG_CONVENTION_TAG: config.loss.cfg_convention,
    }
