"""A trial that Tune stops (ASHA) must give its Ray Train workers' CPUs back. A trial's
TorchTrainer runs without Ray Train's placement-group cleaner
(:func:`distar.raytune.trial.trial_trainer_class`): the sweep's reaper
(:mod:`distar.raytune.placement`) removes the group once the stopped driver's controller is dead.
A ``ray_current_cluster`` file left by an earlier ``ray start`` used to misdirect Ray's cleaner
(every stopped trial then held its CPU for good and a search on 2 CPUs stalled); a stale one is
in place here too, as after the two-node test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a trial driver (an actor, like Tune's) runs a TorchTrainer; it is killed while training, as
# Tune kills a stopped trial's driver; the worker group's placement group must then go
SCRIPT = r"""
import os, sys, time
import ray
from ray.util.placement_group import placement_group_table
from distar.raytune.placement import remove_orphaned_groups
from distar.raytune.trial import trial_trainer_class
from distar.runtime.local_ray import start_local_ray

start_local_ray(num_cpus=2)

MARK = sys.argv[1] + "/training"

def train_fn():  # runs once the worker group has started
    open(MARK, "w").close()
    time.sleep(600)

@ray.remote(num_cpus=0)
class Driver:
    def fit(self, storage):
        from ray.train import RunConfig, ScalingConfig
        trial_trainer_class()(train_fn, scaling_config=ScalingConfig(num_workers=1),
                              run_config=RunConfig(storage_path=storage)).fit()

def worker_groups(state):
    return [pg for pg in placement_group_table().values()
            if pg["state"] == state and pg["bundles"] == {0: {"CPU": 1.0}}]

driver = Driver.remote()
driver.fit.remote(sys.argv[1])
deadline = time.time() + 120
while not os.path.exists(MARK) and time.time() < deadline:
    time.sleep(0.5)
assert os.path.exists(MARK) and worker_groups("CREATED"), "the trainer never trained"
ray.kill(driver)
deadline, idle_since = time.time() + 60, {}
while worker_groups("CREATED") and time.time() < deadline:
    # what the sweep's OrphanReaper does every 2 s; no idle grace: its creator's death alone
    remove_orphaned_groups(idle_since, float("inf"))
    time.sleep(0.5)
print("left:", len(worker_groups("CREATED")), "removed:", len(worker_groups("REMOVED")))
"""


def test_a_killed_trial_driver_frees_its_workers_placement_group(tmp_path):
    # Ray's temp dir (sockets: a short path) holds the stale file of a cluster long gone
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "left: 0 removed: 1" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
