"""One sweep trial, in Ray's three layers:

1. Tune runs :func:`trial_driver` (a function trainable) with the trial's parameters;
2. the driver builds the :class:`~distar.config.Config` and a ``TorchTrainer`` sized by
   ``config.resources`` (Ray 2.60's Train v2 no longer lets Tune run a trainer directly);
3. each TorchTrainer worker runs :func:`train_worker`, which calls the plain
   :class:`distar.train.Trainer` -- the same code ``python -m distar.train`` runs without Ray.

The driver itself only waits on the trainer, so it holds no CPU (:func:`driver_resources`);
the workers hold the real CPUs / GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distar import timing
from distar.callbacks import Callback, JsonlLogger
from distar.config import Config


def driver_resources():
    """What a trial driver asks Tune for: no CPU. Tune needs one non-empty bundle, so it is a
    token of memory. (A token 0.01 CPU, as before, meant two 1-CPU trials never fit on 2 CPUs:
    2 x 1.01 > 2, and a 2-core machine ran its grid one trial at a time.)"""
    from ray import tune

    return tune.PlacementGroupFactory([{}, {"memory": 1 << 20}])


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep shares: where runs and files go."""

    name: str
    tracking_uri: str
    experiment: str
    storage: str  # absolute directory: trial outputs, Ray Train state
    parent_run_id: str
    objective: dict[str, Any] | None = None  # Objective fields, for searches


@dataclass(frozen=True)
class TrialSpec:
    key: str  # unique within the sweep; names the trial's directory and MLflow run
    label: str  # the ablation row, human-readable
    seed: int
    flat_config: dict[str, Any]
    tags: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. the paper's scales
    # a searcher's draw in the paper's units ({"alpha_rew": .., "alpha_cfg": ..}), translated
    # into the world's loss.reward_scale / loss.cfg_scale by config()
    paper: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_params(self, sweep: SweepContext) -> dict[str, Any]:
        return {"trial": asdict(self), "sweep": asdict(sweep)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> tuple[TrialSpec, SweepContext]:
        return cls(**params["trial"]), SweepContext(**params["sweep"])

    def config(self, sweep: SweepContext) -> Config:
        from distar.sweep.grid import paper_to_world

        flat = {**self.flat_config, "train.out_dir": str(Path(sweep.storage) / "trials" / self.key)}
        if self.paper:
            world = flat.get("world.name", "gmm")
            flat.update(paper_to_world(self.paper["alpha_rew"], self.paper["alpha_cfg"], world))
        return Config.from_flat(flat)

    def all_tags(self) -> dict[str, str]:
        """Its tags, with a searched draw's paper scales as the grid's rows carry them."""
        paper = {f"distar.paper_{k}": f"{v:g}" for k, v in self.paper.items()}
        return {**self.tags, **paper}


@dataclass(frozen=True)
class Objective:
    """What a searcher maximises: ``metric`` minus ``penalty`` per unit that ``floor_metric``
    falls below ``floor`` (e.g. maximise reward while precision stays >= 0.9)."""

    metric: str = "reward"
    floor_metric: str = "precision"
    floor: float = 0.0
    penalty: float = 10.0

    def __call__(self, metrics: dict[str, float]) -> float:
        shortfall = max(0.0, self.floor - metrics[self.floor_metric])
        return metrics[self.metric] - self.penalty * shortfall


class RayReporter(Callback):
    """Reports to Ray Train at every evaluation (a barrier: every rank evaluates), carrying the
    latest training metrics along, so Tune's schedulers see one result per evaluation."""

    def __init__(self, objective: Objective | None = None) -> None:
        self.latest: dict[str, float] = {}
        self.objective = objective

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.latest = dict(metrics)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        import ray.train

        ray.train.report(tune_result(self.latest, metrics, step, self.objective))


def tune_result(
    train: dict[str, Any], evals: dict[str, float], step: int, objective: Objective | None
) -> dict[str, Any]:
    """One Tune result: the latest training metrics, ``eval/``-prefixed evaluation metrics, the
    step and (for a search) the scalar objective."""
    result = {**train, **{f"eval/{k}": v for k, v in evals.items()}, "step": step}
    if objective is not None and evals:
        result["objective"] = objective(evals)
    return result


FAILURE_FILE = "failure.txt"  # a trial's deterministic failure (divergence), one line
FAILURE_TAG = "distar.failure"


class TrialFailedError(RuntimeError):
    """A trial that cannot succeed by retrying (it diverged): Tune marks it failed."""


def train_worker(loop_config: dict[str, Any]) -> None:
    """Layer 3: plain distar training on one TorchTrainer worker. A divergence (NaN/Inf) is
    written to ``failure.txt`` and the worker returns: Ray Train restarts workers that *die*
    (``resources.max_failures``), and a diverging run would only diverge again."""
    out_dir = Path(loop_config["config"]["train.out_dir"])
    timing.mark(out_dir, "worker_start")
    # a lost tracking server must not stall training in MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import ray.train

    from distar.sweep.faults import FaultInjector
    from distar.sweep.tracking import MlflowLogger
    from distar.train import NonFiniteLossError, Trainer

    config = Config.from_flat(loop_config["config"])
    objective = loop_config.get("objective")
    callbacks: list[Callback] = [RayReporter(Objective(**objective) if objective else None)]
    rank0 = ray.train.get_context().get_world_rank() == 0
    if rank0:
        record_placement_group(out_dir)
        uri, run_id = loop_config["tracking_uri"], loop_config["run_id"]
        callbacks.append(MlflowLogger(uri, run_id, loop_config["row"], out_dir))
        callbacks.append(JsonlLogger(out_dir))
        callbacks.append(FaultInjector(out_dir))  # last: the step it fires at is logged
    trainer = Trainer(config, callbacks=callbacks)
    if rank0:
        timing.mark(out_dir, "trainer_built")
    checkpoints = out_dir / "checkpoints"
    if (checkpoints / "latest").exists():  # a restarted trial continues where it stopped
        trainer.resume(checkpoints)
        if rank0:
            timing.write(out_dir, {"resumed_at": trainer.step})
    try:
        trainer.train()
    except NonFiniteLossError as error:
        if rank0:
            (out_dir / FAILURE_FILE).write_text(f"diverged: {error}\n")
        return
    if rank0:
        timing.write(out_dir, {"phases": trainer.stopwatch.seconds})
        timing.mark(out_dir, "worker_end")


PLACEMENT_GROUPS_FILE = "placement_groups.txt"  # one per worker-group start of the trial


def record_placement_group(out_dir: Path) -> None:
    """Rank 0 notes its worker group's placement group for :func:`remove_placement_groups`."""
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    if group is not None:
        with (out_dir / PLACEMENT_GROUPS_FILE).open("a") as f:
            f.write(group.id.hex() + "\n")


def remove_placement_groups(out_dir: Path) -> None:
    """Remove the trial's recorded worker-group placement groups that are still there.

    Ray Train removes its own when a fit ends, except when the controller fails while losing
    a node (ControllerError: an actor it calls died with the node): the group, rescheduled onto
    a live node, then held that node's CPU with no worker and the sweep waited forever (seen in
    tests/test_multinode.py, 2 runs in 8)."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import (
        PlacementGroup,
        placement_group_table,
        remove_placement_group,
    )

    path = out_dir / PLACEMENT_GROUPS_FILE
    if not path.exists():
        return
    for hex_id in sorted(set(path.read_text().split())):
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
        if placement_group_table(group).get("state") not in (None, "REMOVED"):
            remove_placement_group(group)
    path.unlink()


def one_line(error: BaseException) -> str:
    """An error as one readable line: its last non-empty line, without Ray's wrapping."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]


def trial_driver(params: dict[str, Any]) -> None:
    """Layer 2: one Tune trial -> config -> MLflow child run -> TorchTrainer. A retried trial
    (Tune re-runs it after its node died) finds its MLflow run and checkpoints again."""
    from mlflow.tracking import MlflowClient

    spec, sweep = TrialSpec.from_params(params)
    if not spec.key:  # a searcher's trial: named by Tune's trial id
        from ray import tune

        spec = dataclasses.replace(spec, key=f"{spec.label}-{tune.get_context().get_trial_id()}")
    config = spec.config(sweep)
    out_dir = Path(config.train.out_dir)
    timing.mark(out_dir, "driver_start")
    client = MlflowClient(sweep.tracking_uri)
    run_id, created = child_run(client, spec, sweep, config)
    if (out_dir / FAILURE_FILE).exists():  # diverged before: retrying cannot help
        raise TrialFailedError((out_dir / FAILURE_FILE).read_text().strip())
    if not created and already_finished(client, run_id, config.train.steps):
        report_final(out_dir, sweep.objective)  # a resumed sweep does not train it again
        return
    row = {"label": spec.label, "seed": spec.seed, "huber_c": config.loss.huber_c}
    timing.mark(out_dir, "fit_start")
    remove_placement_groups(out_dir)  # an earlier attempt's, if its driver died with its node
    try:
        make_torch_trainer(config, spec, sweep, run_id, row).fit()
        if (out_dir / FAILURE_FILE).exists():
            raise TrialFailedError((out_dir / FAILURE_FILE).read_text().strip())
    except BaseException as error:
        from ray.train import WorkerGroupError

        reason = str(error) if isinstance(error, TrialFailedError) else one_line(error)
        if isinstance(error, WorkerGroupError) and not (out_dir / FAILURE_FILE).exists():
            # Ray Train gave up after resources.max_failures worker-group restarts: a Tune retry
            # would only repeat that. Anything else is worth a retry: the driver's node died, or
            # the controller lost an actor on a dead node (ControllerError, seen in
            # tests/test_multinode.py once drivers held no CPU and could land on that node).
            (out_dir / FAILURE_FILE).write_text(reason + "\n")
        safely(client.set_tag, run_id, FAILURE_TAG, reason)
        safely(client.set_terminated, run_id, status="FAILED")
        raise
    finally:
        remove_placement_groups(out_dir)
    timing.mark(out_dir, "fit_end")
    report_final(out_dir, sweep.objective)
    safely(client.set_terminated, run_id, status="FINISHED")
    timing.mark(out_dir, "driver_end")


def safely(call, *args, **kwargs) -> None:
    """A tracking-store call whose failure must not fail the trial (its outputs are on disk)."""
    from distar.sweep.tracking import TRACKING_ERRORS

    try:
        call(*args, **kwargs)
    except TRACKING_ERRORS as error:
        print(f"MLflow: {call.__name__} failed: {one_line(error)}", file=sys.stderr)


def child_run(client, spec: TrialSpec, sweep: SweepContext, config: Config) -> tuple[str, bool]:
    """The trial's MLflow child run, found by its tags or created with its params and tags."""
    from distar.sweep import tracking

    experiment_id = tracking.ensure_experiment(client, sweep.experiment, None)
    tags = {
        tracking.SWEEP_TAG: sweep.name,
        tracking.TRIAL_TAG: spec.key,
        tracking.PARENT_TAG: sweep.parent_run_id,
    }
    run_id, created = tracking.find_or_create_run(
        client, experiment_id, tags, f"{spec.label} · seed {spec.seed}"
    )
    if created:
        client.set_tag(run_id, tracking.LABEL_TAG, spec.label)
        client.set_tag(run_id, "distar.seed", str(spec.seed))
        for key, value in spec.all_tags().items():
            client.set_tag(run_id, key, value)
        tracking.log_params(client, run_id, config.to_flat())
        client.log_text(run_id, config.to_yaml(), "config.yaml")
    return run_id, created


def already_finished(client, run_id: str, steps: int) -> bool:
    from distar.sweep.tracking import FINAL_STEP_TAG

    run = client.get_run(run_id)
    return run.info.status == "FINISHED" and run.data.tags.get(FINAL_STEP_TAG) == str(steps)


def final_result(out_dir: Path, objective: dict[str, Any] | None) -> dict[str, Any]:
    """The trial's last training and evaluation metrics as one Tune result, read from its own
    ``metrics.jsonl`` (rank 0 wrote it before returning; no tracking store needed)."""
    train: dict[str, Any] = {}
    evals: dict[str, float] = {}
    step = 0
    path = out_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    for record in map(json.loads, lines):
        kind = record.pop("kind")
        if kind == "train":
            step = record.pop("step")
            train.update(record)
        elif kind == "eval":
            step = record.pop("step")
            evals = record
    return tune_result(train, evals, step, Objective(**objective) if objective else None)


def report_final(out_dir: Path, objective: dict[str, Any] | None) -> None:
    """Hand Tune the trial's final result once more, from the trial's own record: after a worker
    restart Ray Train does not always pass the last report on (seen in tests/test_faults.py),
    and a trial finished before a ``--resume`` is not trained again."""
    from ray import tune

    tune.report(final_result(out_dir, objective))


def make_torch_trainer(
    config: Config, spec: TrialSpec, sweep: SweepContext, run_id: str, row: dict[str, Any]
):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = config.resources
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "config": config.to_flat(),
            "run_id": run_id,
            "row": row,
            "tracking_uri": sweep.tracking_uri,
            "objective": sweep.objective,
        },
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
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
            callbacks=[TuneReportCallback()],
            # a dead worker (process or node) restarts the worker group, which resumes from
            # the trial's last distar checkpoint
            failure_config=FailureConfig(max_failures=res.max_failures),
        ),
    )
