"""Layer 3 of a sweep trial: what each TorchTrainer worker runs -- the plain
:class:`distar.trainer.Trainer`, with the callbacks that report to Ray and MLflow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distar import timing
from distar.callbacks import Callback, JsonlLogger
from distar.config import Config
from distar.evaluation.preflight import active_requests
from distar.raytune.faults import FaultInjector
from distar.raytune.placement import record_placement_group
from distar.raytune.spec import Objective, tune_result

FAILURE_FILE = "failure.txt"  # a trial's deterministic failure (divergence), one line
FAILURE_TAG = "distar.failure"


class TrialFailedError(RuntimeError):
    """A trial that cannot succeed by retrying (it diverged): Tune marks it failed."""


class RayReporter(Callback):
    """Reports to Ray Train at every evaluation (a barrier: every rank evaluates), carrying the
    latest training metrics along, so Tune's schedulers see one result per evaluation. With
    benchmarks configured it reports once they are scored too (the trainer calls
    ``on_benchmarks`` on every rank; rank 0 alone has results), so a search's objective can be
    a held-out benchmark metric (``parti/imagereward``)."""

    def __init__(self, objective: Objective | None = None, benchmarks: bool = False) -> None:
        self.latest: dict[str, float] = {}
        self.objective = objective
        self.benchmarks = benchmarks
        self.evals: dict[str, float] = {}

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.latest = dict(metrics)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        self.evals = dict(metrics)
        if not self.benchmarks:
            self._report(step)

    def on_benchmarks(self, step: int, results: list) -> None:
        if not self.benchmarks:  # reported at on_eval already
            return
        for result in results:
            self.evals.update(result.summary)
        self._report(step)

    def _report(self, step: int) -> None:
        import ray.train

        ray.train.report(tune_result(self.latest, self.evals, step, self.objective))


def train_worker(loop_config: dict[str, Any]) -> None:
    """Layer 3: plain distar training on one TorchTrainer worker. A divergence (NaN/Inf) is
    written to ``failure.txt`` and the worker returns: Tune retries trials whose workers *die*
    (``resources.max_failures``), and a diverging run would only diverge again."""
    out_dir = Path(loop_config["config"]["train.out_dir"])
    import ray.train

    rank0 = ray.train.get_context().get_world_rank() == 0
    if rank0:
        # first of all: a node lost after this point cannot leak the group (seen when the
        # record came after the imports below and the node died during them)
        record_placement_group(out_dir)
    timing.mark(out_dir, "worker_start")
    # a lost tracking server must not stall training in MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # torch and the evaluation stack load in the worker only, never in the trial driver
    from distar.evaluation.in_training import benchmark_evaluator
    from distar.raytune.mlflow_logger import MlflowLogger
    from distar.trainer import NonFiniteLossError, Trainer

    config = Config.from_flat(loop_config["config"])
    objective = loop_config.get("objective")
    reporter = RayReporter(Objective(**objective) if objective else None, bool(
        active_requests(config.eval)))
    callbacks: list[Callback] = [reporter]
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
