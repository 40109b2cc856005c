"""Start Ray, set up MLflow, run the trials under Tune, collect one row per trial."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distar.config import ConfigError
from distar.sweep.trial import SweepContext, TrialSpec, driver_resources, trial_driver

# Ray Train v2 hands reports to Tune once per controller health check (~2 s by default). Nothing
# is dropped, but every trial waits on it: measured (benchmarks/ray_facts.py), 10 reports 0.2 s
# apart took 43.1 s end to end with the default interval and 28.8 s with 0.1 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
TRIAL_RETRIES = 2
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"


@dataclass(frozen=True)
class SweepSettings:
    name: str
    experiment: str
    storage: Path  # sweep root: trials/, tune/, ray_train/, mlartifacts/, mlflow.db
    tracking_uri: str | None = None  # None: SQLite under storage
    max_concurrent: int = 2
    resume: bool = False
    verbose: bool = False  # Tune's own status tables
    num_cpus: int | None = None  # None: all of this machine's (a cluster brings its own)

    @staticmethod
    def add_arguments(p: Any, experiment: str, name: str, storage: str) -> None:
        """The flags every sweep entry point shares (read back by :meth:`from_args`)."""
        p.add_argument("--max-concurrent", type=int, default=2)
        p.add_argument("--tracking-uri", help="MLflow URI (default: SQLite under --storage)")
        p.add_argument("--experiment", default=experiment)
        p.add_argument("--name", default=name, help="sweep name (Tune dir, MLflow parent run)")
        p.add_argument("--storage", type=Path, default=Path(storage))
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
        p.add_argument("--verbose", action="store_true", help="Tune's status tables as well")

    @classmethod
    def from_args(cls, args: Any) -> SweepSettings:
        """From the shared command-line flags of the sweep entry points (checked: ConfigError)."""
        if not 1 <= args.max_concurrent <= 10_000:
            raise ConfigError(f"--max-concurrent: got {args.max_concurrent}; allowed: 1 to 10000")
        return cls(
            args.name,
            args.experiment,
            args.storage,
            args.tracking_uri,
            args.max_concurrent,
            args.resume,
            verbose=args.verbose,
        )

    def uri(self) -> str:
        from distar.sweep.tracking import default_tracking_uri

        return self.tracking_uri or default_tracking_uri(self.storage)


def parent_tags(settings: SweepSettings) -> dict[str, str]:
    """The tags that mark a sweep's parent MLflow run (it is found by them, never by id)."""
    from distar.sweep import tracking

    return {tracking.SWEEP_TAG: settings.name, "distar.role": "parent"}


class SweepExistsError(RuntimeError):
    pass


class TrackingStoreError(RuntimeError):
    """The tracking store is unreachable or refuses writes: the sweep cannot record anything."""


def start_ray(num_cpus: int | None) -> None:
    """Join a cluster if RAY_ADDRESS says so, else start a local one (:func:`start_local_ray`)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        start_local_ray(num_cpus)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(num_cpus: int | None) -> None:
    """A fresh local Ray (never one a ``ray start`` left on this machine) with its dashboard on
    127.0.0.1, whose processes are told where that dashboard is.

    Ray Train's placement-group cleaner (it frees a trial's CPUs and GPUs when a scheduler such
    as ASHA stops the trial) asks the state API, which looks for the cluster in
    ``/tmp/ray/ray_current_cluster``: a ``ray start`` writes it and a local Ray does not, so a
    file left by an earlier cluster made every cleaner fail and stopped trials held their
    resources for good (measured: a search on 2 CPUs stalled after the first ASHA stop).
    ``RAY_API_SERVER_ADDRESS`` in the environment the local Ray starts with comes first."""
    import ray

    port = free_port()
    # inherited by Ray's processes, not kept in this one's: a later Ray (a test's) must not see it
    env = {
        API_SERVER_VARIABLE: f"http://127.0.0.1:{port}",
        # one machine is never preempted: one actor process fewer per trial
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get(
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"
        ),
    }
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=False)  # fmt: skip
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


# what refuses a sweep before it starts: one line to the user, exit 2, never a traceback
SWEEP_REFUSALS = (ConfigError, SweepExistsError, TrackingStoreError)


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


def parent_run(settings: SweepSettings) -> str:
    """The sweep's parent MLflow run; a second sweep of the same name needs ``resume``. Its
    creation is the sweep's write probe: a store that refuses writes fails here, before Ray."""
    from mlflow.tracking import MlflowClient

    from distar.sweep import tracking

    # a local store gets an explicit artifact root; a tracking server keeps (and proxies) its own
    local = settings.uri().startswith(("sqlite:", "file:"))
    artifact_root = settings.storage / "mlartifacts" if local else None
    try:
        client = MlflowClient(settings.uri())
        experiment_id = tracking.ensure_experiment(client, settings.experiment, artifact_root)
        run_id, created = tracking.find_or_create_run(
            client, experiment_id, parent_tags(settings), settings.name
        )
    except tracking.TRACKING_ERRORS as error:
        lines = [line for line in str(error).splitlines() if line.strip()] or [repr(error)]
        raise TrackingStoreError(
            f"--tracking-uri {settings.uri()}: cannot write ({lines[0][:200]})"
        ) from None
    if not created and not settings.resume:
        raise SweepExistsError(
            f"sweep {settings.name!r} already has MLflow run {run_id} in experiment "
            f"{settings.experiment!r}; pass --resume to continue it or choose another --name"
        )
    return run_id


def definition_path(settings: SweepSettings) -> Path:
    return settings.storage / "grids" / f"{settings.name}.json"


def normalised(definition: dict[str, Any]) -> dict[str, Any]:
    """As it reads back from JSON (tuples become lists), so a resumed sweep compares equal."""
    return json.loads(json.dumps(definition, sort_keys=True, default=str))


def check_definition(settings: SweepSettings, definition: dict[str, Any]) -> None:
    """On ``--resume`` a definition other than the recorded one is refused, naming what
    differs (Tune would silently resume the old one)."""
    if not settings.resume:
        return
    path = definition_path(settings)
    if not path.exists():
        raise ConfigError(
            f"--resume: no sweep {settings.name!r} to resume under {settings.storage}; "
            "run it without --resume, or give its --storage and --name"
        )
    diff = describe_difference(json.loads(path.read_text()), normalised(definition))
    if diff:
        raise ConfigError(
            f"--resume: sweep {settings.name!r} was started with other settings ({diff}); "
            "give the same flags, or another --name"
        )


def record_definition(settings: SweepSettings, definition: dict[str, Any]) -> None:
    """What the sweep runs, in ``grids/<name>.json``, for a later ``--resume`` to check."""
    path = definition_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(normalised(definition), indent=1, sort_keys=True))


def describe_difference(old: dict[str, Any], new: dict[str, Any], shown: int = 3) -> str:
    """``trials added: a, b; removed: c; changed: d (train.steps 600 -> 10)``, briefly."""

    def listed(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:shown]) + (" ..." if len(items) > shown else "")

    parts = []
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    for word, keys in (("added", added), ("removed", removed)):
        if keys:
            parts.append(f"{word}: {listed(keys)}")
    changed = []
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            a, b = old[key], new[key]
            if isinstance(a, dict) and isinstance(b, dict):
                fields = [f for f in sorted(a.keys() | b.keys()) if a.get(f) != b.get(f)]
                f = fields[0]
                changed.append(f"{key} ({f} {a.get(f)} -> {b.get(f)})")
            else:
                changed.append(f"{key} ({a} -> {b})")
    if changed:
        parts.append(f"changed: {listed(changed, '; ')}")
    return "; ".join(parts)


def build_tuner(
    trials: list[TrialSpec],
    settings: SweepSettings,
    ctx: SweepContext,
    tune_config: Any = None,
    param_space: dict[str, Any] | None = None,
):
    from ray import tune

    from distar.sweep.console import SweepConsole

    path = settings.storage / "tune" / settings.name
    trainable = tune.with_resources(trial_driver, driver_resources())
    if settings.resume and tune.Tuner.can_restore(str(path)):
        # finished trials are not re-run; errored and unfinished ones continue
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    if param_space is None:
        param_space = {"trial": tune.grid_search([asdict(t) for t in trials]), "sweep": asdict(ctx)}
    # reuse_actors: a trial's driver process (Ray, MLflow and distar imported) serves the next
    # trial; benchmarks/sweep_overhead.py measured ~2.3 s saved per trial on 2 cores
    tune_config = tune_config or tune.TuneConfig(
        max_concurrent_trials=settings.max_concurrent, reuse_actors=True
    )
    total = len(trials) if trials else getattr(tune_config, "num_samples", None)
    run_config = tune.RunConfig(
        name=settings.name,
        storage_path=str(path.parent),
        verbose=1 if settings.verbose else 0,
        callbacks=[SweepConsole(total, console_metrics(trials))],
        # a trial whose driver died (its node was lost) runs again and finds its MLflow run and
        # checkpoints; one that failed for good says so in failure.txt and is not retried
        failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
    )
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


def console_metrics(trials: list[TrialSpec]) -> tuple[str, ...]:
    """The world preset's report metrics (the first three), for the console lines."""
    from distar.config import world_preset

    name = trials[0].flat_config.get("world.name", "gmm") if trials else "gmm"
    return world_preset(name).metrics[:3]


def parent_run_id(settings: SweepSettings) -> str | None:
    from mlflow.tracking import MlflowClient

    from distar.sweep import tracking

    client = MlflowClient(settings.uri())
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return None
    tags = parent_tags(settings)
    return tracking.find_run(client, experiment.experiment_id, tags)


def log_sweep_report(settings: SweepSettings, report_dir: Path, params: dict[str, Any]) -> None:
    """The sweep's report (tables, CSV, plots) and its own parameters on the parent run."""
    from mlflow.tracking import MlflowClient

    from distar.sweep.tracking import log_params

    run_id = parent_run_id(settings)
    if run_id is None:
        return
    client = MlflowClient(settings.uri())
    log_params(client, run_id, params)
    client.log_artifacts(run_id, str(report_dir), "report")


def open_sweep(settings: SweepSettings, definition: dict[str, Any]) -> str:
    """Everything that can refuse the sweep, before Ray starts: the tracking server, the
    definition on ``--resume``, the write probe of the parent run. Returns the parent run id."""
    # the sweep's own MLflow calls: a dead server fails in seconds, not minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    check_tracking_server(settings.uri())
    check_definition(settings, definition)
    settings.storage.mkdir(parents=True, exist_ok=True)
    parent = parent_run(settings)
    record_definition(settings, definition)
    if settings.resume:  # a failure other than divergence may have been fixed: retry it
        from distar.sweep.trial import FAILURE_FILE

        for failure in (settings.storage / "trials").glob(f"*/{FAILURE_FILE}"):
            if not failure.read_text().startswith("diverged"):
                failure.unlink()
    return parent


def run_sweep(
    trials: list[TrialSpec],
    settings: SweepSettings,
    tune_config: Any = None,
    space: Callable[[SweepContext], dict[str, Any]] | None = None,
    objective: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every trial (or, with ``space``, whatever Tune samples from ``space(ctx)``); returns one
    dict per Tune trial: its key, label, seed, error and last reported metrics. ``definition``
    (default: the trials' configs) is what a ``--resume`` must match."""
    from distar.sweep.trial import safely

    storage = settings.storage.resolve()
    settings = SweepSettings(**{**asdict(settings), "storage": storage})
    if definition is None:
        definition = {t.key: t.flat_config for t in trials}
    parent = open_sweep(settings, definition)
    ctx = SweepContext(
        settings.name, settings.uri(), settings.experiment, str(storage), parent, objective
    )
    start_ray(settings.num_cpus)
    param_space = space(ctx) if space is not None else None
    results = build_tuner(trials, settings, ctx, tune_config, param_space).fit()
    from mlflow.tracking import MlflowClient

    status = "FAILED" if results.errors else "FINISHED"
    safely(MlflowClient(settings.uri()).set_terminated, parent, status=status)
    report_unlogged(storage)
    return [result_row(result) for result in results]


def result_row(result: Any) -> dict[str, Any]:
    from distar.sweep.trial import one_line

    trial = (result.config or {}).get("trial", {})
    metrics = result.metrics or {}
    searched = f"{trial.get('label')}-{metrics['trial_id']}" if "trial_id" in metrics else None
    return {
        "key": trial.get("key") or searched or Path(result.path).name,  # as the trial driver's
        "label": trial.get("label"),
        "seed": trial.get("seed"),
        "error": one_line(result.error) if result.error else "",
        **{f"paper/{k}": v for k, v in trial.get("paper", {}).items()},
        **metrics,
    }


def report_unlogged(storage: Path) -> None:
    """Name every trial whose values the tracking store refused (kept in its unlogged.jsonl)."""
    from distar.sweep.tracking import UNLOGGED

    for spool in sorted((storage / "trials").glob(f"*/{UNLOGGED}")):
        count = len(spool.read_text().splitlines())
        print(f"MLflow did not take {count} records of trial {spool.parent.name}; kept in {spool}",
              file=sys.stderr)  # fmt: skip
