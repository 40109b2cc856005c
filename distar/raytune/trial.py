"""One sweep trial, in Ray's three layers:

1. Tune runs :func:`trial_driver` (a function trainable) with the trial's parameters;
2. the driver builds the :class:`~distar.config.tree.Config` and a ``TorchTrainer`` sized by
   ``config.resources`` (Ray 2.60's Train v2 no longer lets Tune run a trainer directly);
3. each TorchTrainer worker runs :func:`distar.raytune.worker.train_worker`, which calls the
   plain :class:`distar.loop.trainer.Trainer` -- the same loop ``python -m distar.cli.train`` runs.

The driver itself only waits on the trainer, so it holds no CPU (:func:`driver_resources`);
the workers hold the real CPUs / GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from distar.config.paper import ALPHA_CFG, ALPHA_REW
from distar.config.tree import Config
from distar.evaluation.preflight import active_requests
from distar.raytune.fence import claim, owns
from distar.raytune.forward import RecordForwarder
from distar.raytune.spec import TRIAL_DIR, Objective, SweepContext, TrialSpec, tune_result
from distar.raytune.worker import FAILURE_FILE, FAILURE_TAG, TrialFailedError, train_worker
from distar.runtime import timing
from distar.runtime.distributed import backend
from distar.runtime.records import read_records, record_values
from distar.track import tracking


def driver_resources():
    """What a trial driver asks Tune for: no CPU. Tune needs one non-empty bundle, so it is a
    token of memory. (A token 0.01 CPU, as before, meant two 1-CPU trials never fit on 2 CPUs:
    2 x 1.01 > 2, and a 2-core machine ran its grid one trial at a time.)"""
    from ray import tune

    return tune.PlacementGroupFactory([{}, {"memory": 1 << 20}])


def one_line(error: BaseException) -> str:
    """An error as one readable line: its last non-empty line, without Ray's wrapping."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]


def trial_driver(params: dict[str, Any]) -> None:
    """Layer 2: one Tune trial -> config -> MLflow child run -> TorchTrainer. A retried trial
    (Tune re-runs it after its node died) finds its MLflow run and checkpoints again."""
    spec, sweep = TrialSpec.from_params(params)
    if not spec.key:  # a searcher's trial: named by Tune's trial id
        from ray import tune

        spec = dataclasses.replace(spec, key=f"{spec.label}-{tune.get_context().get_trial_id()}")
    config = spec.config(sweep)
    out_dir = Path(config.train.out_dir)
    timing.mark(out_dir, "driver_start")
    # a lost tracking server must not hold the trial in MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    client = tracking.client(sweep.tracking_uri)
    run_id, created = child_run(client, spec, sweep, config)
    if (out_dir / FAILURE_FILE).exists():  # diverged before: retrying cannot help
        raise TrialFailedError((out_dir / FAILURE_FILE).read_text().strip())
    if not created and already_finished(client, run_id, config.train.steps):
        report_final(out_dir, sweep.objective)  # a resumed sweep does not train it again
        return
    row = {"label": spec.label, "seed": spec.seed, "huber_c": config.loss.huber_c}
    timing.mark(out_dir, "fit_start")
    attempt = claim(out_dir)  # from here, an earlier attempt still running writes nothing
    try:
        benchmarks = len(active_requests(config.eval))
        from distar.raytune.mlflow_logger import MlflowLogger  # MLflow's tables, pandas

        logger = MlflowLogger(sweep.tracking_uri, run_id, row, out_dir)
        forwarder = RecordForwarder(out_dir, logger, attempt)
        fit_reporting(
            make_torch_trainer(config, spec, sweep, attempt),
            out_dir,
            sweep.objective,
            benchmarks,
            forwarder,
        )
        if (out_dir / FAILURE_FILE).exists():
            raise TrialFailedError((out_dir / FAILURE_FILE).read_text().strip())
    except BaseException as error:
        # a dead worker, process or node (WorkerGroupError, or ControllerError when the
        # controller lost an actor on a dead node) is retried by Tune; a divergence is not
        # (failure.txt, written by the worker, fails every later attempt at once)
        # (a superseded attempt, cut off by a partition, leaves the run to the one that owns it)
        if owns(out_dir, attempt):
            reason = str(error) if isinstance(error, TrialFailedError) else one_line(error)
            safely(client.set_tag, run_id, FAILURE_TAG, reason)
            safely(client.set_terminated, run_id, status="FAILED")
        raise
    timing.mark(out_dir, "fit_end")
    if owns(out_dir, attempt):
        safely(client.set_terminated, run_id, status="FINISHED")
    timing.mark(out_dir, "driver_end")


def safely(call, *args, **kwargs) -> None:
    """A tracking-store call whose failure must not fail the trial (its outputs are on disk)."""
    try:
        call(*args, **kwargs)
    except tracking.TRACKING_ERRORS as error:
        print(f"MLflow: {call.__name__} failed: {one_line(error)}", file=sys.stderr)


def child_run(client, spec: TrialSpec, sweep: SweepContext, config: Config) -> tuple[str, bool]:
    """The trial's MLflow child run, found by its tags or created with its params and tags."""
    experiment_id = tracking.ensure_experiment(client, sweep.experiment, None)
    tags = {
        tracking.SWEEP_TAG: sweep.name,
        tracking.TRIAL_TAG: spec.key,
        tracking.PARENT_TAG: sweep.parent_run_id,
    }
    run_id, created = tracking.find_or_create_run(client, experiment_id, tags, spec.run_name())
    if created:
        client.set_tag(run_id, tracking.LABEL_TAG, spec.label)
        client.set_tag(run_id, "distar.seed", str(spec.seed))
        if sweep.smoke:
            client.set_tag(run_id, tracking.SMOKE_TAG, "true")
        for key, value in {**spec.all_tags(), **tracking.unit_tags(config)}.items():
            client.set_tag(run_id, key, value)
        # the paper's values as params too (MLflow's Compare plots params, not tags), beside
        # the world-unit loss.* params they translate into
        values = {k: v for k, v in spec.all_tags().items() if k in (ALPHA_REW, ALPHA_CFG)}
        tracking.log_params(client, run_id, {**config.to_flat(), **values})
        client.log_text(run_id, config.to_yaml(), "config.yaml")
    return run_id, created


def already_finished(client, run_id: str, steps: int) -> bool:
    run = client.get_run(run_id)
    final_step = run.data.tags.get(tracking.FINAL_STEP_TAG)
    return run.info.status == "FINISHED" and final_step == str(steps)


REPORT_POLL_SECONDS = 0.5


def recorded_evaluations(out_dir: Path, benchmarks: int, finished: bool) -> list[tuple]:
    """:func:`evaluations` in the trial's ``metrics.jsonl``."""
    return evaluations(read_records(out_dir), benchmarks, finished)


def evaluations(records: list[dict[str, Any]], benchmarks: int, finished: bool) -> list[tuple]:
    """Each evaluation in rank 0's records, in order: (step, the training metrics logged
    before it, its metrics with every benchmark's summary). The last one is left out while its
    benchmark rows may still come (fewer than ``benchmarks`` and the fit not ``finished``)."""
    train: dict[str, Any] = {}
    found: list[list] = []
    for record in records:
        kind, step, values = record["kind"], record["step"], record_values(record)
        if kind == "train":
            train.update(values)
        elif kind == "eval":
            found.append([step, dict(train), values, 0])
        elif kind == "benchmark" and found:  # after the eval record of its step
            found[-1][2].update(values)
            found[-1][3] += 1
    if found and found[-1][3] < benchmarks and not finished:
        found.pop()
    return [(step, train_then, evals) for step, train_then, evals, _ in found]


def final_result(out_dir: Path, objective: dict[str, Any] | None) -> dict[str, Any]:
    """The trial's last evaluation as one Tune result, read from its own record."""
    found = recorded_evaluations(out_dir, 0, finished=True)
    step, train, evals = found[-1] if found else (0, {}, {})
    return tune_result(train, evals, step, Objective(**objective) if objective else None)


def report_final(out_dir: Path, objective: dict[str, Any] | None) -> None:
    """Hand Tune the trial's final result from its own record (a trial finished before a
    ``--resume`` is not trained again)."""
    from ray import tune

    tune.report(final_result(out_dir, objective))


def fit_reporting(
    trainer,
    out_dir: Path,
    objective: dict[str, Any] | None,
    benchmarks: int,
    forwarder: RecordForwarder,
) -> None:
    """``trainer.fit()`` in a thread while this (Tune's trainable) thread hands Tune each
    evaluation the trial records, as it completes; the fit's error is raised here.

    Why not Ray Train's ``TuneReportCallback``: it forwards worker reports through a queue that
    Tune's main thread drains into a one-slot result queue it alone empties; a report forwarded
    after the function's own last report deadlocked a trial (Ray 2.60, seen in the full suite:
    both threads blocked in ``Queue.put``). Reports from one thread cannot cross. Evaluations up
    to the checkpoint a retried attempt resumes from were reported by the attempt before. Each
    round forwards the records to MLflow (``forwarder``) before Tune sees them: a trial that
    Tune stops has its last evaluation in MLflow, as does a failed fit."""
    done, failure = threading.Event(), []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:  # re-raised in the trial's thread
            failure.append(error)
        finally:
            done.set()

    resumed = checkpoint_step(out_dir / "checkpoints")
    forwarder.start(resumed)
    threading.Thread(target=fit, name="torch-trainer-fit", daemon=True).start()
    report_evaluations(forwarder, objective, benchmarks, done, resumed)
    if failure:
        raise failure[0]


def report_evaluations(
    forwarder: RecordForwarder,
    objective: dict[str, Any] | None,
    benchmarks: int,
    done: threading.Event,
    resumed: int,
) -> None:
    """Forward the records, then hand Tune each evaluation after ``resumed`` among them, until
    the fit is ``done`` (its last round reads what the fit wrote last)."""
    from ray import tune

    out_dir = forwarder.out_dir
    reported: set[int] = set()
    while True:
        finished = done.wait(REPORT_POLL_SECONDS)
        records = forwarder.poll()
        for step, train, evals in evaluations(records, benchmarks, finished):
            if step > resumed and step not in reported:
                result = tune_result(
                    train, evals, step, Objective(**objective) if objective else None
                )
                # where its per-sample items are: the paired stopper reads them
                tune.report({**result, TRIAL_DIR: str(out_dir)})
                reported.add(step)
        if finished:
            break
    if not reported:  # a retry that resumed at its last step: Tune still needs a result
        report_final(out_dir, objective)


def checkpoint_step(checkpoints: Path) -> int:
    """The step of the trial's latest checkpoint (-1: none), read before an attempt starts."""
    latest = checkpoints / "latest"
    return int(latest.read_text().strip().rpartition("_")[2]) if latest.exists() else -1


@functools.cache
def trial_trainer_class():
    """Ray Train's ``TorchTrainer`` without two actors a trial never uses, each a Python process
    started (Ray imported) for every trial: the ``DatasetManager`` (made for every fit, datasets
    or none; distar's workers read no Ray Data) and the detached ``PlacementGroupCleaner`` (the
    sweep's :class:`~distar.raytune.placement.OrphanReaper` removes a group whose controller
    died, which is all that cleaner does). ``benchmarks/sweep_overhead.py`` measures the saving.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    unused = (DatasetsCallback, PlacementGroupCleanerCallback)

    class TrialTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

    return TrialTorchTrainer


def make_torch_trainer(config: Config, spec: TrialSpec, sweep: SweepContext, attempt: str):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    res = config.resources
    return trial_trainer_class()(
        train_worker,
        train_loop_config={
            "config": config,  # the trial's Config itself: Ray pickles it to each worker
            "attempt": attempt,  # the fencing token (distar.raytune.fence)
        },
        torch_config=TorchConfig(backend=backend(res.use_gpu, res.cpu_offload)),
        scaling_config=ScalingConfig(
            num_workers=res.num_workers,
            use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker},
        ),
        # A reused Train run name silently resumes that run's state: make every attempt unique;
        # continuity comes from distar's own checkpoints in the trial directory.
        run_config=RunConfig(
            name=f"{spec.key}-{time.time_ns()}",
            storage_path=str(Path(sweep.storage) / "ray_train"),
            # Ray Train restarts nothing itself: a worker-group restart inside a controller that
            # then failed (ControllerError, a node lost) left the new group's placement group,
            # never started and known to no cleaner, holding a CPU for the rest of the sweep
            # (tests/test_multinode.py, 3 full-suite runs in 3). A dead worker or node fails the
            # fit instead, and Tune retries the trial (resources.max_failures times): it
            # resumes from the trial's last distar checkpoint.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
