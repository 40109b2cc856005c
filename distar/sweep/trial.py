"""One sweep trial, in Ray's three layers:

1. Tune runs :func:`trial_driver` (a function trainable) with the trial's parameters;
2. the driver builds the :class:`~distar.config.Config` and a ``TorchTrainer`` sized by
   ``config.resources`` (Ray 2.60's Train v2 no longer lets Tune run a trainer directly);
3. each TorchTrainer worker runs :func:`train_worker`, which calls the plain
   :class:`distar.train.Trainer` -- the same code ``python -m distar.train`` runs without Ray.

The driver itself only waits on the trainer, so it asks Tune for a token CPU share
(``DRIVER_CPUS``); the workers hold the real CPUs / GPUs.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distar import timing
from distar.callbacks import Callback, JsonlLogger
from distar.config import Config

DRIVER_CPUS = 0.01


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

    def to_params(self, sweep: SweepContext) -> dict[str, Any]:
        return {"trial": asdict(self), "sweep": asdict(sweep)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> tuple[TrialSpec, SweepContext]:
        return cls(**params["trial"]), SweepContext(**params["sweep"])

    def config(self, sweep: SweepContext) -> Config:
        out_dir = str(Path(sweep.storage) / "trials" / self.key)
        return Config.from_flat({**self.flat_config, "train.out_dir": out_dir})


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

        evals = {f"eval/{k}": v for k, v in metrics.items()}
        if self.objective is not None:
            evals["objective"] = self.objective(metrics)
        ray.train.report({**self.latest, **evals, "step": step})


def train_worker(loop_config: dict[str, Any]) -> None:
    """Layer 3: plain distar training on one TorchTrainer worker."""
    out_dir = loop_config["config"]["train.out_dir"]
    timing.mark(out_dir, "worker_start")
    import ray.train

    from distar.sweep.tracking import MlflowLogger
    from distar.train import Trainer

    config = Config.from_flat(loop_config["config"])
    objective = loop_config.get("objective")
    callbacks: list[Callback] = [RayReporter(Objective(**objective) if objective else None)]
    if ray.train.get_context().get_world_rank() == 0:
        callbacks.append(
            MlflowLogger(loop_config["tracking_uri"], loop_config["run_id"], loop_config["row"])
        )
        callbacks.append(JsonlLogger(Path(config.train.out_dir)))
    trainer = Trainer(config, callbacks=callbacks)
    rank0 = ray.train.get_context().get_world_rank() == 0
    if rank0:
        timing.mark(out_dir, "trainer_built")
    checkpoints = Path(config.train.out_dir) / "checkpoints"
    if (checkpoints / "latest").exists():  # a restarted trial continues where it stopped
        trainer.resume(checkpoints)
    trainer.train()
    if rank0:
        timing.write(out_dir, {"phases": trainer.stopwatch.seconds})
        timing.mark(out_dir, "worker_end")


def trial_driver(params: dict[str, Any]) -> None:
    """Layer 2: one Tune trial -> config -> MLflow child run -> TorchTrainer."""
    from mlflow.tracking import MlflowClient

    from distar.sweep import tracking

    spec, sweep = TrialSpec.from_params(params)
    if not spec.key:  # a searcher's trial: named by Tune's trial id
        from ray import tune

        spec = dataclasses.replace(spec, key=f"{spec.label}-{tune.get_context().get_trial_id()}")
    config = spec.config(sweep)
    timing.mark(config.train.out_dir, "driver_start")
    client = MlflowClient(sweep.tracking_uri)
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
        for key, value in spec.tags.items():
            client.set_tag(run_id, key, value)
        tracking.log_params(client, run_id, config.to_flat())
        client.log_text(run_id, config.to_yaml(), "config.yaml")
    if not created and already_finished(client, run_id, config.train.steps):
        report_finished(client, run_id)  # a restarted sweep does not train a finished trial again
        return
    row = {"label": spec.label, "seed": spec.seed, "huber_c": config.loss.huber_c}
    timing.mark(config.train.out_dir, "fit_start")
    try:
        make_torch_trainer(config, spec, sweep, run_id, row).fit()
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    timing.mark(config.train.out_dir, "fit_end")
    client.set_terminated(run_id, status="FINISHED")
    timing.mark(config.train.out_dir, "driver_end")


def already_finished(client, run_id: str, steps: int) -> bool:
    from distar.sweep.tracking import FINAL_STEP_TAG

    run = client.get_run(run_id)
    return run.info.status == "FINISHED" and run.data.tags.get(FINAL_STEP_TAG) == str(steps)


def report_finished(client, run_id: str) -> None:
    """Hand Tune the finished trial's last metrics, read back from its MLflow run."""
    from ray import tune

    tune.report(dict(client.get_run(run_id).data.metrics))


def make_torch_trainer(
    config: Config, spec: TrialSpec, sweep: SweepContext, run_id: str, row: dict[str, Any]
):
    from ray.train import RunConfig, ScalingConfig
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
        ),
    )
