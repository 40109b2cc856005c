"""Start Ray, set up MLflow, run the trials under Tune, collect one row per trial."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distar.sweep.trial import DRIVER_CPUS, SweepContext, TrialSpec, trial_driver

# Ray Train v2 hands reports to Tune once per controller health check (~2 s by default). Nothing
# is dropped, but every trial waits on it: measured (benchmarks/ray_facts.py), 10 reports 0.2 s
# apart took 43.1 s end to end with the default interval and 28.8 s with 0.1 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")


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
        from distar.config import ConfigError

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


def start_ray(num_cpus: int | None) -> None:
    """Join a cluster if RAY_ADDRESS says so, else start a local Ray with its dashboard on
    127.0.0.1 (without the dashboard, trials stopped by a scheduler leak placement groups)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
        )


def parent_run(settings: SweepSettings) -> str:
    """The sweep's parent MLflow run; a second sweep of the same name needs ``resume``."""
    from mlflow.tracking import MlflowClient

    from distar.sweep import tracking

    client = MlflowClient(settings.uri())
    # a local store gets an explicit artifact root; a tracking server keeps (and proxies) its own
    local = settings.uri().startswith(("sqlite:", "file:"))
    artifact_root = settings.storage / "mlartifacts" if local else None
    experiment_id = tracking.ensure_experiment(client, settings.experiment, artifact_root)
    tags = parent_tags(settings)
    run_id, created = tracking.find_or_create_run(client, experiment_id, tags, settings.name)
    if not created and not settings.resume:
        raise SweepExistsError(
            f"sweep {settings.name!r} already has MLflow run {run_id} in experiment "
            f"{settings.experiment!r}; pass --resume to continue it or choose another --name"
        )
    return run_id


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
    trainable = tune.with_resources(trial_driver, {"cpu": DRIVER_CPUS})
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


def run_sweep(
    trials: list[TrialSpec],
    settings: SweepSettings,
    tune_config: Any = None,
    space: Callable[[SweepContext], dict[str, Any]] | None = None,
    objective: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every trial (or, with ``space``, whatever Tune samples from ``space(ctx)``); returns one
    dict per Tune trial: its key, label, seed, error and last reported metrics."""
    from mlflow.tracking import MlflowClient

    settings.storage.mkdir(parents=True, exist_ok=True)
    storage = settings.storage.resolve()
    settings = SweepSettings(**{**asdict(settings), "storage": storage})
    parent = parent_run(settings)
    ctx = SweepContext(
        settings.name, settings.uri(), settings.experiment, str(storage), parent, objective
    )
    start_ray(settings.num_cpus)
    param_space = space(ctx) if space is not None else None
    results = build_tuner(trials, settings, ctx, tune_config, param_space).fit()
    MlflowClient(settings.uri()).set_terminated(
        parent, status="FAILED" if results.errors else "FINISHED"
    )
    rows = []
    for result in results:
        trial = (result.config or {}).get("trial", {})
        rows.append(
            {
                "key": trial.get("key") or Path(result.path).name,
                "label": trial.get("label"),
                "seed": trial.get("seed"),
                "error": repr(result.error) if result.error else "",
                **(result.metrics or {}),
            }
        )
    return rows
