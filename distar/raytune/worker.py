"""Layer 3 of a sweep trial: what each TorchTrainer worker runs -- the plain
:class:`distar.loop.trainer.Trainer`, whose rank 0 records to the trial's folder
(:mod:`distar.runtime.records`): the trial driver hands those records on to Tune and MLflow."""

from __future__ import annotations

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
    node = ray.util.get_node_ip_address()
    timing.mark(out_dir, "worker_start", node=node)
    # the training and evaluation stack load in the worker only
    from distar.evaluation.in_training import benchmark_evaluator
    from distar.loop.trainer import Trainer

    # no ray.train.report and no MLflow here: the trial driver hands the records to Tune and
    # MLflow. The fence first: an attempt that a later one superseded writes nothing more
    callbacks: list[Callback] = [Fence(out_dir, loop_config["attempt"])]
    if rank0:
        callbacks.append(JsonlLogger(out_dir, attempt=loop_config["attempt"]))
        # last: the step it fires at is logged
        callbacks.append(FaultInjector(out_dir, loop_config["attempt"], node))
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
