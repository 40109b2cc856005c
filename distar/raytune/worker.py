"""Layer 3 of a sweep trial: what each TorchTrainer worker runs -- the plain
:class:`distar.loop.trainer.Trainer`, with the callbacks that record to MLflow and to the trial's
``metrics.jsonl`` (which the trial driver hands on to Tune)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distar.config.tree import Config
from distar.raytune.faults import FaultInjector
from distar.raytune.fence import Fence
from distar.runtime import timing
from distar.runtime.callbacks import Callback, JsonlLogger
from distar.runtime.step_parts import NonFiniteLossError

FAILURE_FILE = "failure.txt"  # a trial's deterministic failure (divergence), one line
FAILURE_TAG = "distar.failure"


class TrialFailedError(RuntimeError):
    """A trial that cannot succeed by retrying (it diverged): Tune marks it failed."""


def train_worker(loop_config: dict[str, Any]) -> None:
    """Layer 3: plain distar training on one TorchTrainer worker. A divergence (NaN/Inf) is
    written to ``failure.txt`` and the worker returns: Tune retries trials whose workers *die*
    (``resources.max_failures``), and a diverging run would only diverge again."""
    config: Config = loop_config["config"]  # built once, by the trial driver
    out_dir = Path(config.train.out_dir)
    import ray.train

    rank0 = ray.train.get_context().get_world_rank() == 0
    timing.mark(out_dir, "worker_start", node=ray.util.get_node_ip_address())
    # a lost tracking server must not stall training in MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # torch and the evaluation stack load in the worker only, never in the trial driver
    from distar.evaluation.in_training import benchmark_evaluator
    from distar.loop.trainer import Trainer
    from distar.raytune.mlflow_logger import MlflowLogger

    # no ray.train.report: the trial driver hands Tune each evaluation from metrics.jsonl.
    # The fence first: an attempt that a later one superseded writes nothing more
    callbacks: list[Callback] = [Fence(out_dir, loop_config["attempt"])]
    if rank0:
        uri, run_id = loop_config["tracking_uri"], loop_config["run_id"]
        callbacks.append(MlflowLogger(uri, run_id, loop_config["row"], out_dir))
        callbacks.append(JsonlLogger(out_dir))
        callbacks.append(FaultInjector(out_dir))  # last: the step it fires at is logged
    trainer = Trainer(config, callbacks=callbacks, benchmarks=benchmark_evaluator(config))
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
