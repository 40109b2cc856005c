"""Checks the Ray 2.60 behaviours the sweep layer is built around, each in a fresh Ray.
Not a test (minutes, and it deliberately provokes a hang); run it after a Ray upgrade.

    python benchmarks/ray_facts.py [throttle] [name_reuse] [pg_leak]

- throttle: a TorchTrainer worker reports 10 times, 0.2 s apart, under Tune; how many reach
  Tune with the default health-check interval and with RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1?
- name_reuse: a second TorchTrainer run with the same RunConfig name: does its worker see the
  first run's checkpoint (i.e. silently resume)?
- pg_leak: ASHA stops trials early, one trial at a time, dashboard off vs on: does the sweep
  finish inside the time limit?
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

REPORTS = 10


def _worker_reports(config: dict) -> None:
    import ray.train

    for i in range(REPORTS):
        time.sleep(0.2)
        ray.train.report({"i": i})


def _driver(config: dict) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        _worker_reports,
        scaling_config=ScalingConfig(num_workers=1),
        run_config=RunConfig(
            name=f"t{time.time_ns()}", storage_path=config["dir"], callbacks=[TuneReportCallback()]
        ),
    ).fit()


def throttle(tmp: str, dashboard: bool = True) -> dict:
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=dashboard, log_to_driver=False)
    t0 = time.time()
    grid = tune.Tuner(
        tune.with_resources(_driver, {"cpu": 0.01}),
        param_space={"dir": tmp},
        run_config=tune.RunConfig(storage_path=tmp, name="throttle"),
    ).fit()
    frame = grid[0].metrics_dataframe
    return {
        "interval": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "default"),
        "reports_sent": REPORTS,
        "reports_seen_by_tune": len(frame),
        "last_i": int(frame["i"].iloc[-1]),
        "seconds": round(time.time() - t0, 1),
    }


def _worker_checkpoint(config: dict) -> None:
    import ray.train

    previous = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "x"), "w") as f:
            f.write("1")
        ray.train.report(
            {"saw_checkpoint": previous is not None}, checkpoint=ray.train.Checkpoint(d)
        )


def name_reuse(tmp: str) -> dict:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(num_cpus=2, log_to_driver=False)
    seen = []
    for _ in range(2):
        result = TorchTrainer(
            _worker_checkpoint,
            scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name="same-name", storage_path=tmp),
        ).fit()
        seen.append(bool(result.metrics["saw_checkpoint"]))
    return {"first_run_saw_checkpoint": seen[0], "second_run_saw_checkpoint": seen[1]}


def _worker_long(config: dict) -> None:
    import ray.train

    for i in range(8):
        time.sleep(0.3)
        ray.train.report({"score": config["quality"] * (i + 1), "it": i + 1})


def _driver_long(config: dict) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    TorchTrainer(
        _worker_long,
        train_loop_config=config,
        # 1.5 of the 2 CPUs: one trial fits beside its 0.01-CPU driver, two never do, so a
        # leaked placement group starves the next trial
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1.5}),
        run_config=RunConfig(
            name=f"t{time.time_ns()}", storage_path=config["dir"], callbacks=[TuneReportCallback()]
        ),
    ).fit()


def pg_leak(tmp: str, dashboard: bool) -> dict:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    ray.init(num_cpus=2, include_dashboard=dashboard, log_to_driver=False)
    t0 = time.time()
    grid = tune.Tuner(
        tune.with_resources(_driver_long, {"cpu": 0.01}),
        param_space={"dir": tmp, "quality": tune.grid_search([4, 3, 2, 1])},
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            max_concurrent_trials=1,
            scheduler=ASHAScheduler(time_attr="it", max_t=8, grace_period=1, reduction_factor=2),
        ),
        run_config=tune.RunConfig(storage_path=tmp, name="pgleak"),
    ).fit()
    stopped = sum(int(r.metrics.get("it", 0)) < 8 for r in grid)
    return {
        "dashboard": dashboard,
        "trials": len(grid),
        "stopped_early": stopped,
        "seconds": round(time.time() - t0, 1),
    }


CASES = {
    "throttle_default": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": None}, "throttle", ()),
    "throttle_0.1": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}, "throttle", ()),
    "name_reuse": ({}, "name_reuse", ()),
    "pg_leak_dashboard_off": ({}, "pg_leak", (False,)),
    "pg_leak_dashboard_on": ({}, "pg_leak", (True,)),
}


def run_case(name: str, limit_s: float = 180) -> dict:
    """Each case in its own interpreter: a fresh Ray, its own environment, a hard time limit."""
    env_change, _, _ = CASES[name]
    env = dict(os.environ)
    for key, value in env_change.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    cmd = [sys.executable, __file__, "--case", name]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        subprocess.run(["ray", "stop", "--force"], capture_output=True)
        return {"case": name, "result": f"HUNG: no result within {limit_s:.0f} s"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"case": name, "result": f"FAILED rc={out.returncode}: {out.stderr[-800:]}"}
    return {"case": name, **json.loads(lines[-1])}


def main() -> None:
    if sys.argv[1:2] == ["--case"]:
        _, fn, args = CASES[sys.argv[2]]
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(globals()[fn](tmp, *args)))
        return
    wanted = sys.argv[1:] or ["throttle", "name_reuse", "pg_leak"]
    for name in CASES:
        if any(name.startswith(w) for w in wanted):
            print(json.dumps(run_case(name)), flush=True)


if __name__ == "__main__":
    main()
