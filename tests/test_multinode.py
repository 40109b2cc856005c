"""A real two-node Ray cluster on this machine (``ray start --head`` plus ``ray start
--address=...``, each with declared CPUs), the smoke sweep submitted as a Ray job, and the second
node killed while one of its trials trains: the sweep still finishes on the head alone (no node
replaces the lost one) and its report is complete. And the placement group a node's death used
to leave holding the head's CPU (distar.raytune.placement), made on purpose and reaped."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from sweeps_common import FAST_HEALTH, TINY, free_port
from test_faults import assert_no_step_logged_twice

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")  # this interpreter's CLI, not PATH's


def start_node(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    ports = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ]
    argv = [RAY, "start", "--block", "--disable-usage-stats", *args]
    for flag in ports:
        argv += [flag, str(free_port())]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def start_head(port: int, env: dict[str, str], *extra: str, cpus: int = 1) -> subprocess.Popen:
    """A head node with ``cpus`` CPUs on ``port``."""
    common = ["--head", "--port", str(port), "--num-cpus", str(cpus)]
    return start_node([*common, "--ray-client-server-port", str(free_port()), *extra], env)


def node_pids(node: subprocess.Popen) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(node.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def training_pids(storage: Path) -> set[int]:
    """Worker processes that started a trial and have not finished it."""
    from distar.runtime import timing

    pids = set()
    for trial in (storage / "trials").glob("*"):
        marks, _ = timing.read(trial)
        if "worker_start" in marks and "worker_end" not in marks:
            lines = (trial / timing.FILE).read_text().splitlines()
            starts = [json.loads(x) for x in lines if '"worker_start"' in x]
            pids.add(starts[-1]["pid"])
    return pids


def ray_list(what: str, keep: str, port: int, env: dict[str, str], *more: str) -> list | str:
    """``ray list WHAT --filter KEEP`` on the cluster at ``port``: its entries, or what it
    printed where that was not JSON (the state API still starting)."""
    listed = subprocess.run(
        [RAY, "list", what, "--format", "json", "--filter", keep, *more]
        + ["--address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    try:
        return json.loads(listed.stdout)
    except json.JSONDecodeError:
        return listed.stdout[-2000:] + listed.stderr[-2000:]


def wait_for_alive_nodes(count: int, port: int, env: dict[str, str], seconds: float) -> None:
    deadline, alive = time.time() + seconds, 0
    while time.time() < deadline:
        nodes = ray_list("nodes", "state=ALIVE", port, env)
        alive = len(nodes) if isinstance(nodes, list) else 0
        if alive >= count:
            return
        time.sleep(1)
    raise AssertionError(f"{alive} of {count} Ray nodes alive after {seconds} s")


def cluster_state(port: int, env: dict[str, str], storage: Path | None = None) -> str:
    """For a sweep that did not finish, one line each: the live placement groups (where each
    bundle is, what it holds, who made it), the actors not dead (class, pid, node, group), and
    each trial's timing marks (with pids): which group holds a CPU, whether any actor lives in
    it, and where each trial stopped."""
    lines = []
    for what, keep in (("placement-groups", "state!=REMOVED"), ("actors", "state!=DEAD")):
        entries = ray_list(what, keep, port, env, "--detail", "--limit", "1000")
        lines.append(f"--- ray list {what} ({keep})")
        if isinstance(entries, str):
            lines.append(entries)
            continue
        for e in entries:
            if what == "actors":
                lines.append(
                    f"{e['class_name']} {e['state']} pid={e.get('pid')} "
                    f"node={str(e.get('node_id'))[:8]} group={e.get('placement_group_id')} "
                    f"needs={e.get('required_resources')}"
                )
            else:
                bundles = [(str(b.get("node_id"))[:8], b["unit_resources"]) for b in e["bundles"]]
                attempts = (e.get("stats") or {}).get("scheduling_attempt")
                lines.append(
                    f"{e['placement_group_id']} {e['state']} creator_job={e['creator_job_id']}"
                    f" bundles={bundles} attempts={attempts}"
                )
    for trial in sorted((storage / "trials").glob("*")) if storage else []:
        from distar.runtime import timing

        try:  # a report of a stall must not fail on a line still being written
            records = map(json.loads, (trial / timing.FILE).read_text().splitlines())
            marks = [f"{r['mark']}({r.get('pid')})" for r in records if "mark" in r]
        except (OSError, json.JSONDecodeError) as error:
            marks = [repr(error)]
        lines.append(f"{trial.name}: {' '.join(marks)}")
    return "\n" + "\n".join(lines)


def forget_address(port: int) -> None:
    """Nor the address `ray start --head` wrote, which `ray status` and the state API would try."""
    from ray._common.utils import get_ray_address_file

    address_file = Path(get_ray_address_file(None))
    if address_file.exists() and address_file.read_text().endswith(f":{port}"):
        address_file.unlink()


def cluster_env() -> tuple[dict[str, str], str]:
    """The nodes' environment, with the cluster's own token (Ray's token auth stays on), and
    that token; never this process's environment, where Ray would keep it for the other
    tests' Ray."""
    token = secrets.token_hex(32)
    env = {**os.environ, **FAST_HEALTH, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    # as sweeps/cluster_node.sh starts its nodes: no 30 s drain on SIGTERM (for Serve)
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env, token


@pytest.fixture
def two_nodes(world_cache):
    env, token = cluster_env()
    port, dashboard = free_port(), free_port()
    # 1 CPU on the head: of the 2 trials running at once, at least one is on the second node
    # (with 3, Ray placed both on the head), and the head alone finishes the sweep once that
    # node is gone (trial drivers hold no CPU). cluster_state() prints the placement groups and
    # actors if the sweep does not finish.
    head = start_head(
        port, env, "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)
    )
    url = f"http://127.0.0.1:{dashboard}"
    from ray.job_submission import JobSubmissionClient

    deadline = time.time() + 120
    client = None
    while client is None and time.time() < deadline:
        try:
            client = JobSubmissionClient(url, headers={"authorization": f"Bearer {token}"})
        except ConnectionError:
            time.sleep(1)
    assert client is not None, "the head node's dashboard never came up"
    second = start_node(["--address", f"127.0.0.1:{port}", "--num-cpus", "2"], env)
    try:
        # the sweep starts once the second node has joined: a node still starting on a loaded
        # machine left a sweep running on the head alone (seen in a full-suite run)
        wait_for_alive_nodes(2, port, env, 120)
        yield client, second, port, env
    finally:
        for node in (second, head):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)  # `ray start --block` stops its node
                try:
                    node.wait(timeout=10)  # ~3.5 s without the drain; what is left is killed
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(node.pid, signal.SIGKILL)  # and nothing of it outlives the test
            except ProcessLookupError:
                pass
        forget_address(port)


def test_the_smoke_sweep_survives_losing_a_node(two_nodes, tmp_path):
    from analysis.runs import load_runs, summarise
    from distar.config.tree import world_preset

    client, second, port, env = two_nodes
    storage = tmp_path / "sweep"
    flags = [
        f"--set={k}={v}"
        for k, v in {
            **TINY,
            "train.steps": 400,
            "train.log_every": 20,
            "train.checkpoint_every": 40,
        }.items()
    ]
    entrypoint = " ".join(
        [
            sys.executable,
            str(ROOT / "sweeps" / "ablation_grid.py"),
            "--smoke-test",
            # one seed: its 2 trials start at once, one on each node (the head has 1 CPU); the
            # lost node's trial is retried on the head after the other (a second seed only
            # queued 2 more trials behind them on the head's one CPU)
            "--seeds",
            "0",
            "--storage",
            str(storage),
            *flags,
        ]
    )
    job = client.submit_job(entrypoint=entrypoint)
    killed = set()
    deadline = time.time() + 360
    while time.time() < deadline:
        status = client.get_job_status(job)
        if status.is_terminal():
            break
        on_second = training_pids(storage) & node_pids(second) if not killed else set()
        if on_second:  # a trial is training on the second node: lose that node, for good
            killed = on_second
            os.killpg(second.pid, signal.SIGKILL)
        time.sleep(0.2)
    logs = client.get_job_logs(job)
    (tmp_path / "job.log").write_text(logs)  # kept by pytest for the last runs
    # the head's one CPU alone finishes the sweep: no group the lost node's controllers made
    # holds it (a reaped one is named in the logs)
    assert status.value == "SUCCEEDED", logs[-3000:] + cluster_state(port, env, storage)
    reaped = [line for line in logs.splitlines() if "removed placement group" in line]
    print(f"placement groups reaped: {len(reaped)}", *reaped, sep="\n")
    assert killed, "no trial ran on the second node before the sweep ended"
    runs = load_runs(f"sqlite:///{storage / 'mlflow.db'}", "distar-table2", "table2")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}  # no duplicate, none lost
    for run_id in runs["run_id"]:
        assert_no_step_logged_twice(f"sqlite:///{storage / 'mlflow.db'}", run_id)
    report = summarise(runs, world_preset("gmm").metrics)
    assert list(report["seeds"]) == [1, 1] and not report["failed"].any()
    assert "| KL, no CFG | 1 |" in logs  # the printed report is complete


# As Ray Train leaves them when a node dies, two 1-CPU placement groups on the second node (the
# head's 2 CPUs held meanwhile): one made by an actor on that node (a controller that dies with
# it: orphaned), one made by a living actor on the head, whose worker actor in it dies with the
# node (a worker group dropped by a controller that lives on: abandoned). The node dies; Ray
# moves both onto the head, where they hold its 2 CPUs. Printed: their states then, what the
# first reaping removed, what later rounds removed and when (the idle one only after the grace),
# the CPUs after. A group the driver
# made (Tune's trial groups) and a living creator's group with an actor in it must stay.
ORPHAN = r"""
import json, os, signal, sys, time
import ray
from ray._raylet import PlacementGroupID
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from distar.raytune.placement import remove_orphaned_groups

ray.init(address=sys.argv[1])
second, grace = int(sys.argv[2]), float(sys.argv[3])

@ray.remote(num_cpus=0)
class Creator:
    def make(self, resources):
        group = placement_group([resources])
        ray.get(group.ready())
        return group.id.hex()

@ray.remote
class Worker:
    def ready(self):
        return True

def worker_in(hex_id, cpus):
    group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
    strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    worker = Worker.options(num_cpus=cpus, scheduling_strategy=strategy).remote()
    ray.get(worker.ready.remote())
    return worker

def head_cpu():
    return ray.available_resources().get("CPU", 0.0)

blocker = Worker.options(num_cpus=2, resources={"head": 0.1}).remote()
ray.get(blocker.ready.remote())
dying = Creator.options(resources={"second": 0.1}).remote()
orphan = ray.get(dying.make.remote({"CPU": 1}))
living = Creator.options(resources={"head": 0.1}).remote()
abandoned = ray.get(living.make.remote({"CPU": 1}))
doomed = worker_in(abandoned, 1)
busy = ray.get(living.make.remote({"memory": 1, "head": 0.01}))  # stays on the head
keep = worker_in(busy, 0)
kept = [busy, placement_group([{"memory": 1}]).id.hex()]
ray.kill(blocker)
os.killpg(second, signal.SIGKILL)
def states():
    table = placement_group_table()
    return [table[orphan]["state"], table[abandoned]["state"]]

deadline = time.time() + 60
while len([n for n in ray.nodes() if n["Alive"]]) > 1 or states() != ["CREATED", "CREATED"]:
    assert time.time() < deadline, f"the groups never moved to the head: {states()}"
    time.sleep(0.5)
moved, idle_since, start = states(), {}, time.monotonic()
first = remove_orphaned_groups(idle_since, grace)
later = {}  # rounds as the reaper's, until the abandoned group goes: id -> (why, seconds)
while abandoned not in later and time.monotonic() - start < grace + 30:
    time.sleep(0.5)
    for hex_id, why in remove_orphaned_groups(idle_since, grace).items():
        later[hex_id] = (why, time.monotonic() - start)
deadline = time.time() + 30
while head_cpu() < 2 and time.time() < deadline:
    time.sleep(0.5)
states = {k: placement_group_table()[k]["state"] for k in kept}
print("RESULT", json.dumps({"orphan": orphan, "abandoned": abandoned, "moved": moved,
                            "first": first, "later": later, "cpu": head_cpu(),
                            "kept": states}))
"""


def test_orphaned_and_abandoned_groups_are_reaped_and_free_the_heads_cpus(tmp_path):
    env, _ = cluster_env()
    port, grace = free_port(), 3.0
    head = start_head(
        port, env, "--resources", '{"head": 1}', "--include-dashboard", "false", cpus=2
    )
    second = start_node(
        ["--address", f"127.0.0.1:{port}", "--num-cpus", "2", "--resources", '{"second": 1}'],
        env,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", ORPHAN, f"127.0.0.1:{port}", str(second.pid), str(grace)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            cwd=ROOT,
        )
        assert "RESULT" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
        result = json.loads(done.stdout.split("RESULT", 1)[1])
    finally:
        for node in (second, head):
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait(timeout=30)
        forget_address(port)
    # Ray moved both onto the head, where they held both CPUs (why sweeps stalled)
    assert result["moved"] == ["CREATED", "CREATED"]
    # the orphan at once; the abandoned one only once idle for the grace, not before
    orphan, abandoned = result["orphan"], result["abandoned"]
    assert list(result["first"]) == [orphan] and "is dead" in result["first"][orphan]
    assert list(result["later"]) == [abandoned] and "no actor" in result["later"][abandoned][0]
    assert result["later"][abandoned][1] >= grace
    assert result["cpu"] == 2.0
    assert set(result["kept"].values()) == {"CREATED"}
