"""Where a sweep trial's time goes, outside its training steps. Not a test.

    python benchmarks/sweep_overhead.py                    # runs the smoke grid, then the table
    python benchmarks/sweep_overhead.py --storage runs/table2 --sweep table2   # a finished sweep
    python benchmarks/sweep_overhead.py --floor            # + what a no-op TorchTrainer costs

Each trial's driver and rank-0 worker append wall-clock marks and phase sums to
``trials/<trial>/timings.jsonl`` (:mod:`distar.runtime.timing`); this prints their mean per trial:

- driver set-up: the Tune trial's MLflow child run, params, config artifact;
- Ray Train start: the TorchTrainer's controller, worker processes, process group;
- worker imports + world build: importing distar / torch on the worker, building the world;
- training steps / evaluation / checkpoints / logging (callbacks): inside the training loop
  (rank 0 records to the trial's folder; the driver forwards the records to MLflow meanwhile);
- Ray Train stop: from the worker's return until ``fit()`` returns and the driver has forwarded
  the last records to MLflow;
- driver finish: marking the MLflow run finished;
- between trials: ``wall x concurrency / trials`` minus the mean driver time (Tune's own
  scheduling, actor start and result handling).

Fixed cost per trial = trial time minus its training steps. With ``--floor`` the last line is
the ratio the issue tracks: a trial's fixed cost over one no-op fit, both measured in this run
(also with Tune's share between trials, which holds Ray's start and the report, amortised).

``--floor`` also times Ray Train itself on the same machine: a fresh driver actor (as Tune's)
fits a ``TorchTrainer`` whose workers return at once, 4 times; no distar, MLflow or Tune. What
no change to distar can go below.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distar.track import tracking

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distar.runtime import timing  # noqa: E402
from distar.runtime.local_ray import start_local_ray  # noqa: E402

ROWS = (
    ("driver set-up", lambda m, p: m["fit_start"] - m["driver_start"]),
    ("Ray Train start", lambda m, p: m["worker_start"] - m["fit_start"]),
    ("worker imports + world build", lambda m, p: m["trainer_built"] - m["worker_start"]),
    ("  of which world build", lambda m, p: p.get("world_build", 0.0)),
    ("training steps", lambda m, p: p.get("steps", 0.0)),
    ("evaluation", lambda m, p: p.get("evaluation", 0.0)),
    ("checkpoints", lambda m, p: p.get("checkpoint", 0.0)),
    ("logging (callbacks)", lambda m, p: p.get("callbacks", 0.0)),
    ("Ray Train stop", lambda m, p: m["fit_end"] - m["worker_end"]),
    ("driver finish", lambda m, p: m["driver_end"] - m["fit_end"]),
    ("trial (driver start to end)", lambda m, p: m["driver_end"] - m["driver_start"]),
)


def breakdown(storage: Path) -> dict[str, float]:
    """Mean seconds per trial for each row of ``ROWS`` over the sweep's finished trials."""
    trials = [timing.read(d) for d in sorted((storage / "trials").iterdir())]
    done = [(m, p) for m, p in trials if "driver_end" in m]
    if not done:
        raise SystemExit(f"no finished trial with timings under {storage / 'trials'}")
    return {name: statistics.mean(f(m, p) for m, p in done) for name, f in ROWS} | {
        "trials": len(done)
    }


def run_smoke_grid(storage: Path, concurrency: int, extra: list[str]) -> float:
    cmd = [sys.executable, str(ROOT / "sweeps" / "ablation_grid.py"), "--smoke-test"]
    cmd += ["--storage", str(storage), "--max-concurrent", str(concurrency), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_wall(storage: Path, sweep: str, experiment: str) -> float:
    """The parent MLflow run's duration (Ray start, every trial, the report)."""
    db = storage / "mlflow.db"
    if not db.exists():
        raise SystemExit(f"no MLflow store at {db}")
    client = tracking.client(f"sqlite:///{db.resolve()}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`distar.sweep` = '{sweep}' and tags.`distar.role` = 'parent'"
    )
    return (runs[0].info.end_time - runs[0].info.start_time) / 1000


def _return_at_once(config: dict) -> None:
    timing.mark(Path(config["dir"]), "worker_start")


def ray_train_floor(fits: int = 4) -> dict[str, float]:
    """Mean seconds of a no-op TorchTrainer fit (start: fit() to the worker's first line; stop:
    worker done to fit() returned), each from a fresh 0-CPU driver actor, first fit dropped."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    @ray.remote(num_cpus=0)
    def fit(out: str) -> tuple[float, float]:
        t0 = time.time()
        TorchTrainer(
            _return_at_once,
            train_loop_config={"dir": out},
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(storage_path=out, name=Path(out).name),
        ).fit()
        return t0, time.time()

    start_local_ray(None)
    rows = []
    for i in range(fits):
        out = Path(tempfile.mkdtemp(prefix=f"floor{i}-"))
        t0, t1 = ray.get(fit.remote(str(out)))
        started = timing.read(out)[0]["worker_start"]
        rows.append({"start": started - t0, "stop": t1 - started})
    ray.shutdown()
    kept = rows[1:] or rows
    return {k: statistics.mean(r[k] for r in kept) for k in ("start", "stop")}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--storage", type=Path, help="a finished sweep's --storage (default: run one)")
    p.add_argument("--sweep", default="table2")
    p.add_argument("--experiment", default="distar-table2")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--floor", action="store_true", help="also time a no-op TorchTrainer")
    p.add_argument("grid_args", nargs="*", help="more ablation_grid.py flags (after --)")
    args = p.parse_args()
    storage = args.storage
    if storage is None:
        storage = Path(tempfile.mkdtemp(prefix="distar-overhead-"))
        run_smoke_grid(storage, args.max_concurrent, args.grid_args)
    wall = sweep_wall(storage, args.sweep, args.experiment)
    rows = breakdown(storage)
    n = rows.pop("trials")
    per_trial = wall * args.max_concurrent / n
    print(f"{n} trials, up to {args.max_concurrent} at a time; sweep wall {wall:.1f} s")
    print(f"{'mean seconds per trial':32s} {'s':>7s}")
    for name, value in rows.items():
        print(f"{name:32s} {value:7.2f}")
    between = per_trial - rows["trial (driver start to end)"]
    print(f"{'between trials (Tune)':32s} {between:7.2f}")
    fixed = per_trial - rows["training steps"]
    print(f"{'fixed cost per trial':32s} {fixed:7.2f}   (wall x concurrency / trials - steps)")
    print(f"{'sweep wall per trial':32s} {wall / n:7.2f}   (wall / trials)")
    if args.floor:
        floor = ray_train_floor()
        total = floor["start"] + floor["stop"]
        print(
            f"Ray Train alone (no-op TorchTrainer, one at a time): start {floor['start']:.2f} s, "
            f"stop {floor['stop']:.2f} s, {total:.2f} s per fit"
        )
        trial = rows["trial (driver start to end)"] - rows["training steps"]
        print(
            f"fixed cost / Ray Train's floor: a trial {trial:.2f} / {total:.2f} = "
            f"{trial / total:.2f}x (driver start to end, less its steps); with Tune's share "
            f"{fixed:.2f} / {total:.2f} = {fixed / total:.2f}x"
        )


if __name__ == "__main__":
    main()
