"""Run a sweep: everything that can refuse it first (tracking store, ``--resume``), then Ray,
then the trials under Tune; one result row per trial, the report on the parent MLflow run."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distar.config.keys import K
from distar.config.tree import ResourcesConfig, world_preset
from distar.raytune.definition import check_definition, record_definition
from distar.raytune.settings import SweepExistsError, SweepSettings, SweepStartError, parent_tags
from distar.raytune.spec import SweepContext, TrialSpec
from distar.raytune.trial import driver_resources, one_line, safely, trial_driver
from distar.raytune.worker import FAILURE_FILE
from distar.runtime.local_ray import check_ray_address, start_ray
from distar.track import tracking

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def store_call(settings: SweepSettings, call: Callable[[MlflowClient], Any]) -> Any:
    """A call on the sweep's tracking store; a store that refuses it is named in one line."""
    try:
        return call(tracking.client(settings.uri()))
    except tracking.TRACKING_ERRORS as error:
        lines = [line for line in str(error).splitlines() if line.strip()] or [repr(error)]
        raise tracking.TrackingStoreError(
            f"--tracking-uri {settings.uri()}: cannot write ({lines[0][:200]})"
        ) from None


def experiment_id(settings: SweepSettings) -> str:
    """The sweep's experiment, made if new: the store's write probe, before Ray starts."""
    # a local store gets an explicit artifact root; a tracking server keeps (and proxies) its own
    local = settings.uri().startswith(("sqlite:", "file:"))
    root = settings.storage / "mlartifacts" if local else None

    def made_and_written(client: MlflowClient) -> str:
        found = tracking.ensure_experiment(client, settings.experiment, root)
        client.set_experiment_tag(found, "distar.last_sweep", settings.name)  # a write
        return found

    return store_call(settings, made_and_written)


def check_new_name(settings: SweepSettings, experiment: str) -> None:
    """A second sweep of the same name needs ``--resume``."""
    found = store_call(settings, lambda c: tracking.find_run(c, experiment, parent_tags(settings)))
    if found and not settings.resume:
        raise SweepExistsError(
            f"sweep {settings.name!r} already has MLflow run {found} in experiment "
            f"{settings.experiment!r}; pass --resume to continue it or choose another --name"
        )


def parent_run(settings: SweepSettings, experiment: str) -> str:
    """The sweep's parent MLflow run (found again on ``--resume``), made once Ray is up."""
    tags = parent_tags(settings)
    run_id = store_call(
        settings, lambda c: tracking.find_or_create_run(c, experiment, tags, settings.name)[0]
    )
    if settings.smoke:
        store_call(settings, lambda c: c.set_tag(run_id, tracking.SMOKE_TAG, "true"))
    return run_id


def build_tuner(
    trials: list[TrialSpec],
    settings: SweepSettings,
    ctx: SweepContext,
    tune_config: Any = None,
    param_space: dict[str, Any] | None = None,
    stop: Any = None,
):
    """The Tuner (a restored one for ``--resume``); ``stop``: a Tune ``Stopper`` (the search's
    paired stopper) checked on every result."""
    from ray import tune

    from distar.raytune.console import SweepConsole
    from distar.raytune.placement import OrphanReaper

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
        # the reaper frees what a Train controller that died with its node left holding
        callbacks=[SweepConsole(total, console_metrics(trials)), OrphanReaper()],
        # a trial whose worker or driver died (a process, or its node) runs again and finds its
        # MLflow run and checkpoints; one that failed for good says so in failure.txt and
        # fails again at once
        failure_config=tune.FailureConfig(max_failures=trial_retries(trials)),
        stop=stop,
    )
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


def trial_retries(trials: list[TrialSpec]) -> int:
    """How often Tune retries a failed trial: ``resources.max_failures`` (the largest of the
    sweep's trials; the default for a searcher's), plus one for a lost driver."""
    key = K.resources.max_failures
    counts = [t.flat_config.get(key, ResourcesConfig.max_failures) for t in trials or []]
    return 1 + max(counts, default=ResourcesConfig.max_failures)


def console_metrics(trials: list[TrialSpec]) -> tuple[str, ...]:
    """The world preset's report metrics (the first three), for the console lines."""
    name = trials[0].flat_config.get(K.world.name, "gmm") if trials else "gmm"
    return world_preset(name).metrics[:3]


def parent_run_id(settings: SweepSettings) -> str | None:
    client = tracking.client(settings.uri())
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        return None
    tags = parent_tags(settings)
    return tracking.find_run(client, experiment.experiment_id, tags)


def open_sweep(settings: SweepSettings, definition: dict[str, Any]) -> str:
    """The sweep's start, atomic: everything that can refuse it first (the tracking server and
    a write to it, the name, the definition on ``--resume``, Ray's address), then Ray, and only
    then the sweep's records (parent run, definition) -- a start that fails or is killed
    leaves nothing that refuses the same command again. Returns the parent run id."""
    # the sweep's own MLflow calls: a dead server fails in seconds, not minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    tracking.check_tracking_server(settings.uri())
    check_definition(settings, definition)
    settings.storage.mkdir(parents=True, exist_ok=True)
    experiment = experiment_id(settings)
    check_new_name(settings, experiment)
    try:
        check_ray_address()
        start_ray(settings.num_cpus)
    except Exception as error:  # any way Ray fails to start: one line, nothing recorded
        address = os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise SweepStartError(
            f"RAY_ADDRESS: Ray did not start ({address}: {one_line(error)}); nothing was "
            "recorded: run the same command again once Ray is reachable"
        ) from None
    parent = parent_run(settings, experiment)
    record_definition(settings, definition)
    if settings.resume:  # a failure other than divergence may have been fixed: retry it
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
    stop: Any = None,
) -> list[dict[str, Any]]:
    """Run every trial (or, with ``space``, whatever Tune samples from ``space(ctx)``); returns one
    dict per Tune trial: its key, label, seed, error and last reported metrics. ``definition``
    (default: the trials' configs) is what a ``--resume`` must match."""
    storage = settings.storage.resolve()
    settings = SweepSettings(**{**asdict(settings), "storage": storage})
    if definition is None:
        definition = {t.key: t.flat_config for t in trials}
    parent = open_sweep(settings, definition)
    ctx = SweepContext(
        settings.name,
        settings.uri(),
        settings.experiment,
        str(storage),
        parent,
        objective,
        settings.smoke,
    )
    param_space = space(ctx) if space is not None else None
    results = build_tuner(trials, settings, ctx, tune_config, param_space, stop).fit()
    status = "FAILED" if results.errors else "FINISHED"
    safely(tracking.client(settings.uri()).set_terminated, parent, status=status)
    report_unlogged(storage)
    return [result_row(result) for result in results]


def result_row(result: Any) -> dict[str, Any]:
    trial = (result.config or {}).get("trial", {})
    metrics = result.metrics or {}
    searched = f"{trial.get('label')}-{metrics['trial_id']}" if "trial_id" in metrics else None
    return {
        "key": trial.get("key") or searched or Path(result.path).name,  # as the trial driver's
        "label": trial.get("label"),
        "seed": trial.get("seed"),
        "error": one_line(result.error) if result.error else "",
        **{f"paper.{k}": v for k, v in trial.get("paper", {}).items()},  # paper.alpha_rew, ...
        **metrics,
    }


def report_unlogged(storage: Path) -> None:
    """Name every trial whose values the tracking store refused (kept in its unlogged.jsonl)."""
    for spool in sorted((storage / "trials").glob(f"*/{tracking.UNLOGGED}")):
        count = len(spool.read_text().splitlines())
        print(
            f"MLflow did not take {count} records of trial {spool.parent.name}; kept in {spool}",
            file=sys.stderr,
        )
