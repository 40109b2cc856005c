"""`ray up cluster.yaml` onto real separate hosts, the way the README runs it: a head and a worker,
each in a network namespace of its own (tests/netns.py) with its own address and sshd, reached
from this machine (the launcher) over a bridge. The project's cluster.yaml is rendered with those
addresses; the worker joins the head over that network with Ray's token; then, on one cluster:

1. the smoke sweep runs with trials on both nodes; MLflow on the head holds every run and the
   report; a client without the token is turned away;
2. the worker is killed mid-trial (every process on it but sshd): the sweep finishes on the
   head alone, one MLflow run per trial, no step twice; the autoscaler restarts the worker;
3. the worker is cut off mid-trial (its link down): the same, while the cut-off attempt, still
   running (a pause it was given), stops at the fence (distar.raytune.fence) once its retry
   claims the trial; when the link comes back and the worker rejoins, nothing in MLflow or the
   trial folders changes;
4. `cluster_node.sh stop` (the workers' Ray too) then `ray down` leave no process of theirs.

The nodes are offline (the namespaces have no route out): `cluster_node.sh setup` installs the
checkout from what the image has (PIP_NO_INDEX in the nodes' environment, as an air-gapped
cluster sets it). Each sshd runs in a PID and mount namespace of its own: `ray down`'s bare
`ray stop` sees only its host's processes, and the host's passwd home (where OpenSSH expands
`~`, e.g. the autoscaler's `~/ray_bootstrap_key.pem`) is the host's own folder. Every namespace,
link and process is removed by the test's own handles (Lan.close checks it).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from netns import Lan, can_make_namespaces
from sweeps_common import FAST_HEALTH, TINY, dry_run_keys
from test_faults import assert_no_step_logged_twice, jsonl_records

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
WHY_NOT = can_make_namespaces() or (
    "" if SSHD.exists() and shutil.which("rsync") else "needs openssh-server and rsync"
)
pytestmark = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)
OFFLINE_NODE = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # pip: "0" means off
LONG_TRIALS = {**TINY, "train.steps": 400, "train.log_every": 20, "train.checkpoint_every": 40}
# A cut-off attempt runs on (its records on the shared storage) until its retry claims the
# trial, ~10-20 s after the cut, and must write again after that, before its node gives up on
# its own (Ray's 60 s), to meet the fence. A step count cannot say when in wall time: 1600
# steps took 35 s on one 2-core machine and 11 s on another, where the attempt finished before
# its retry claimed the trial. So a trial of the cut sweep on the worker pauses at step
# PAUSE_AT (distar.raytune.faults), just after the step the cut waits for (its first record),
# until its retry has claimed the trial, at most PAUSE_S seconds (a fixed 40 s on every trial
# also paused a trial on the head, holding its one CPU; the claim came 9 s after the cut)
PAUSE_AT, PAUSE_S = 40, 50.0


def ray(args: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    start = time.time()
    done = subprocess.run(
        [str(BIN / "ray"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"ray {args[0]} failed:\n{out[-5000:]}"
    return out, time.time() - start


def wait_for(address: str, port: int, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {address}:{port}")


def start_sshd(lan: Lan, host: str, tmp: Path, home: Path, env: dict[str, str]) -> None:
    """sshd on ``host``'s own address, in a PID and mount namespace of its own, where the passwd
    home is ``home`` (with this machine's interpreter folder bound inside it)."""
    settings = " ".join(f"{k}={v}" for k, v in env.items())
    config = tmp / f"sshd_{host}"
    config.write_text(f"""ListenAddress {lan.address[host]}
Port 22
HostKey {tmp / "host_key"}
PidFile {tmp / f"sshd_{host}.pid"}
AuthorizedKeysFile {tmp / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv {settings}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    passwd_home = Path(pwd.getpwuid(os.getuid()).pw_dir)  # conftest moved $HOME, not this
    python_root = Path(sys.prefix).resolve()
    binds = ""
    if python_root.is_relative_to(passwd_home):
        inside = home / python_root.relative_to(passwd_home)
        binds = f"mkdir -p {inside} && mount --rbind {python_root} {inside} && "
    script = f"{binds}mount --rbind {home} {passwd_home} && exec {SSHD} -D -e -f {config}"
    isolated = ["unshare", "--pid", "--fork", "--mount-proc"]
    log = open(tmp / f"sshd_{host}.log", "w")
    lan.start(host, [*isolated, "bash", "-c", script], stderr=log)
    wait_for(lan.address[host], 22)


@dataclass
class Cluster:
    lan: Lan
    config: Path
    name: str
    homes: dict[str, Path]
    env: dict[str, str]
    ray_tmp: dict[str, Path]
    took: dict[str, float] = field(default_factory=dict)
    mlflow_uri: str = ""

    def ray(self, *args: str, timeout: float = 300) -> str:
        out, self.took[f"ray {args[0]}"] = ray([*args], self.env, timeout)
        return out

    def on_head(self, command: str) -> list[str]:
        """`ray exec` arguments: ``command`` in a login shell on the head."""
        return ["exec", "-n", self.name, str(self.config), command]

    def nodes_alive(self) -> int:
        count = "import ray; ray.init(); print('ALIVE', sum(n['Alive'] for n in ray.nodes()))"
        out, _ = ray(self.on_head(f'{NODE} run python -c "{count}"'), self.env, 120)
        return int(out.split("ALIVE ")[-1].split()[0])

    def wait_for_nodes(self, count: int, seconds: float) -> float:
        started = time.time()
        while self.nodes_alive() != count:
            assert time.time() < started + seconds, f"not {count} nodes:\n" + self.monitor_log()
            time.sleep(5)
        return time.time() - started

    def monitor_log(self) -> str:
        """The head's autoscaler log, without its repeats."""
        logs = self.ray_tmp["head"] / "ray" / "session_latest" / "logs"
        out = ""
        for path in sorted(logs.glob("monitor*")):
            lines = [x for x in path.read_text().splitlines() if "Adding 1 node" not in x]
            out += f"--- {path.name}\n" + "\n".join(lines)[-6000:] + "\n"
        return out

    def sweep(self, name: str, sets: dict, more: str = "") -> subprocess.Popen:
        """A smoke sweep on the head (`ray exec`), into the head's MLflow; storage every node
        sees (this machine's filesystem) at ``storage(name)``."""
        flags = " ".join([*(f"--set={k}={v}" for k, v in sets.items()), more])
        command = (
            f"{NODE} run python sweeps/ablation_grid.py --smoke-test --name {name} "
            f"--storage {self.storage(name)} --tracking-uri {self.mlflow_uri} {flags}"
        )
        return subprocess.Popen(
            [str(BIN / "ray"), *self.on_head(command)], cwd=ROOT, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def storage(self, name: str) -> Path:
        return self.homes["head"] / "shared-storage" / name


NODE = "bash ~/distar/sweeps/cluster_node.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netns-cluster")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True
        )
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    homes = {h: tmp / f"{h}-home" for h in ("head", "worker", "local")}
    for home in homes.values():
        home.mkdir()
        (home / ".bash_profile").write_text(f'export PATH="{BIN}:$PATH"\n')  # a node's Python
    run_sshd = Path("/run/sshd")  # sshd's privilege-separation folder: removed if made here
    made_run_sshd = not run_sshd.exists()
    lan = Lan(["head", "worker"])
    name = f"distar-netns-{os.getpid()}"
    # each host keeps Ray's session files in a short folder of its own (socket paths < 108 B),
    # and the launcher its temporary files (`ray up`'s config cache) in one of its own
    hosts = ("head", "worker", "launcher")
    ray_tmp = {h: Path(tempfile.mkdtemp(prefix="r", dir="/tmp")) for h in hosts}
    try:
        # one CPU on the head: trials use the worker's two as well, and the head alone
        # finishes a sweep once the worker is gone (trial drivers hold no CPU)
        for host, cpus in (("head", "1"), ("worker", "2")):
            # FAST_HEALTH reaches the nodes' Ray through sshd's SetEnv
            node_env = {**FAST_HEALTH, **OFFLINE_NODE, "DISTAR_RAY_CPUS": cpus}
            start_sshd(lan, host, tmp, homes[host], {**node_env, "RAY_TMPDIR": str(ray_tmp[host])})
        config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
        config["provider"].update(head_ip=lan.address["head"], worker_ips=[lan.address["worker"]])
        config["max_workers"] = 1
        config["auth"] = {"ssh_user": "root", "ssh_private_key": str(tmp / "client_key")}
        (tmp / "cluster.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(HOME=str(homes["local"]), RAY_AUTH_MODE="token", PATH=f"{BIN}:{env['PATH']}")
        env["TMPDIR"] = str(ray_tmp["launcher"])
        yield Cluster(lan, tmp / "cluster.yaml", name, homes, env, ray_tmp)
    finally:
        lan.close()  # every process on the hosts, by the namespaces' own lists
        for folder in ray_tmp.values():
            shutil.rmtree(folder, ignore_errors=True)
        from ray.autoscaler._private.local.config import get_lock_path, get_state_path

        for path in (get_lock_path(name), get_state_path(name)):
            Path(path).unlink(missing_ok=True)
        forget_ssh_sockets(name)
        if made_run_sshd:
            run_sshd.rmdir()


def forget_ssh_sockets(cluster: str) -> None:
    """The SSH control sockets Ray's launcher (and the head's autoscaler, on this machine's
    /tmp) kept for the cluster: ``/tmp/ray_ssh_<user>/<cluster>``, fixed by Ray."""
    import getpass
    import hashlib

    user, ours = (hashlib.sha256(x.encode()).hexdigest()[:10] for x in (getpass.getuser(), cluster))
    folder = Path(f"/tmp/ray_ssh_{user}")
    shutil.rmtree(folder / ours, ignore_errors=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@pytest.fixture(scope="module")
def up(cluster):
    """The cluster up (`ray up`) with its worker joined; the timings printed at the end."""
    cluster.ray("get-auth-token", "--generate", timeout=60)
    out = cluster.ray("up", "-y", "--no-config-cache", "-n", cluster.name, str(cluster.config),
                      timeout=900)  # fmt: skip
    cluster.mlflow_uri = f"http://{cluster.lan.address['head']}:5000"
    assert cluster.mlflow_uri in out
    cluster.took["worker joined"] = cluster.wait_for_nodes(2, 300)
    yield cluster
    print("cluster timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in cluster.took.items()))


def trial_nodes(storage: Path) -> set[str]:
    """The nodes the trials' rank-0 workers started on (their worker_start marks)."""
    return {
        record["node"]
        for timings in storage.glob("trials/*/timings.jsonl")
        for record in map(json.loads, timings.read_text().splitlines())
        if record.get("mark") == "worker_start"
    }


def training_on(storage: Path, address: str) -> list[Path]:
    """Trial folders whose latest attempt trains on ``address`` and has reported a step."""
    found = []
    for trial in storage.glob("trials/*"):
        timings = trial / "timings.jsonl"  # none yet where a fault file made the folder
        lines = timings.read_text().splitlines() if timings.exists() else []
        marks = [json.loads(x) for x in lines if '"mark"' in x]
        starts = [m for m in marks if m["mark"] == "worker_start"]
        ended = any(m["mark"] == "worker_end" for m in marks)
        if starts and starts[-1]["node"] == address and not ended:
            if (trial / "metrics.jsonl").exists():
                found.append(trial)
    return found


def finish(sweep: subprocess.Popen, seeds: int = 2, seconds: float = 900) -> str:
    out, _ = sweep.communicate(timeout=seconds)
    assert sweep.returncode == 0, out[-5000:]
    assert f"| KL, no CFG | {seeds} |" in out  # the printed report is complete
    return out


def fault_mid_trial(
    cluster: Cluster, name: str, fault, sets: dict, seeds: int = 2
) -> tuple[str, Path]:
    """A long smoke sweep (``seeds`` seeds of its 2 rows); ``fault()`` once a trial trains on
    the worker. Returns its output and the trial the fault hit."""
    sweep = cluster.sweep(name, sets, "--seeds " + " ".join(map(str, range(seeds))))
    started, hit = time.time(), []
    while not hit and sweep.poll() is None and time.time() < started + 600:
        hit = training_on(cluster.storage(name), cluster.lan.address["worker"])
        time.sleep(0.2)
    assert hit, "no trial trained on the worker"
    fault()
    return finish(sweep, seeds), hit[0]


def check_every_trial_once(cluster: Cluster, name: str, trials: int) -> dict[str, object]:
    """One FINISHED MLflow run a trial, no step twice in MLflow or a trial's metrics.jsonl.
    Returns each run's logged metric count and each trial's records (compared again after a
    rejoin)."""
    from mlflow import MlflowClient

    from analysis.runs import load_runs

    runs = load_runs(cluster.mlflow_uri, "distar-table2", name)
    assert len(runs) == trials and set(runs["status"]) == {"FINISHED"}
    client, counts = MlflowClient(cluster.mlflow_uri), {}
    for run_id in runs["run_id"]:
        assert_no_step_logged_twice(cluster.mlflow_uri, run_id)
        keys = client.get_run(run_id).data.metrics
        counts[run_id] = sum(len(client.get_metric_history(run_id, k)) for k in keys)
    for trial in cluster.storage(name).glob("trials/*"):
        records = jsonl_records(trial)
        assert len(records) == len(set(records)), (trial.name, records)
        counts[trial.name] = (trial / "metrics.jsonl").read_text()
    return counts


def test_a_worker_joins_over_the_network_and_trials_run_on_both(up):
    from mlflow import MlflowClient

    storage = up.storage("table2")
    started = time.time()
    # 3 trials at once need 3 CPUs: the worker's 2 and the head's (with 2, both may land on
    # the worker: seen once trials started faster)
    finish(up.sweep("table2", TINY, "--max-concurrent 3"))
    up.took["sweep"] = time.time() - started
    assert trial_nodes(storage) == {up.lan.address["head"], up.lan.address["worker"]}
    check_every_trial_once(up, "table2", 4)
    client = MlflowClient(up.mlflow_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("distar-table2").experiment_id],
        "tags.`distar.role` = 'parent' and tags.`distar.sweep` = 'table2'",
    )
    assert "report/table2.md" in {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    }
    assert list((up.homes["head"] / "distar-runs" / "mlartifacts").rglob("table2.md"))
    head = up.homes["head"]  # what file_mounts copied: the checkout, without .git or runs/
    assert (head / "distar" / "sweeps" / "cluster_node.sh").exists()
    assert not (head / "distar" / ".git").exists() and not (head / "distar" / "runs").exists()
    # token authentication is on: a client over the network without the token is turned away
    bare = {**up.env, "HOME": str(up.homes["local"] / "elsewhere")}
    bare.pop("RAY_AUTH_MODE")
    gcs = f"{up.lan.address['head']}:6379"
    refused = subprocess.run(
        [str(BIN / "ray"), "status", "--address", gcs], env=bare, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()


def test_a_killed_worker_costs_no_trial_and_the_autoscaler_brings_it_back(up):
    def kill_worker() -> None:  # the host's every process but its sshd: its Ray, its trials
        for pid, name in up.lan.processes_of("worker").items():
            if name not in ("unshare", "sshd"):
                with contextlib.suppress(ProcessLookupError):  # it exited since the listing
                    os.kill(pid, 9)

    started = time.time()
    _, hit = fault_mid_trial(up, "killed", kill_worker, LONG_TRIALS, seeds=1)
    up.took["sweep, worker killed"] = time.time() - started
    check_every_trial_once(up, "killed", 2)
    assert (hit / "checkpoints" / "latest").exists()
    up.took["worker back after the kill"] = up.wait_for_nodes(2, 300)


def test_a_cut_off_worker_is_fenced_and_its_rejoining_duplicates_nothing(up):
    from distar.raytune.faults import inject

    # one seed: its 2 trials start at once, so the pauses overlap (a second seed's trials would
    # pause one after the other on the head)
    keys = dry_run_keys(
        "ablation_grid",
        ["--smoke-test", "--seeds", "0", *(f"--set={k}={v}" for k, v in LONG_TRIALS.items())],
    )
    assert len(keys) == 2
    worker = up.lan.address["worker"]
    for key in keys:  # the cut-off attempt pauses; its retry (the file consumed) runs through
        inject(up.storage("cut") / "trials" / key, PAUSE_AT, "pause", PAUSE_S, node=worker)
    started, cut_at = time.time(), []

    def cut() -> None:
        cut_at.append(time.time())
        up.lan.link("worker", up=False)

    _, hit = fault_mid_trial(up, "cut", cut, LONG_TRIALS, seeds=1)
    up.took["sweep, worker cut off"] = time.time() - started
    before = check_every_trial_once(up, "cut", 2)
    # the cut-off attempt ran on (its pause) until its retry claimed the trial, then stopped at
    # the fence: at its first write after the pause, which may come after the sweep ended (both
    # trials on the worker: their retries had the head to themselves), and before its node
    # gives up (60 s after the cut)
    assert (hit / "inject_fault.fired").exists()
    superseded = hit / "superseded.jsonl"
    while not superseded.exists() and time.time() < cut_at[0] + PAUSE_S + 15:
        time.sleep(0.5)
    fenced = [json.loads(x) for x in superseded.read_text().splitlines()]
    assert fenced and fenced[0]["step"] >= PAUSE_AT, "the cut-off attempt was not fenced"
    up.lan.link("worker", up=True)
    up.took["worker back after the cut"] = up.wait_for_nodes(2, 300)
    assert check_every_trial_once(up, "cut", 2) == before  # MLflow and the trial folders


def only_sshd_within(up: Cluster, host: str, seconds: float, said: str) -> None:
    deadline = time.time() + seconds
    while set(up.lan.processes_of(host).values()) - {"unshare", "sshd"}:
        log = up.homes[host] / "distar-cluster" / "ray.log"
        assert time.time() < deadline, f"{host}: {up.lan.processes_of(host)}\n{said[-3000:]}\n" + (
            log.read_text()[-3000:] if log.exists() else ""
        )
        time.sleep(1)


def test_stop_then_ray_down_leave_no_process_of_theirs(up):
    assert len(list((up.homes["head"] / "distar-cluster").glob("*.pid"))) == 2  # Ray, MLflow
    assert len(list((up.homes["worker"] / "distar-cluster").glob("*.pid"))) == 1
    said = up.ray(*up.on_head(f"{NODE} stop"))
    # each process group went at its TERM (Ray's SIGTERM drain is off: cluster_node.sh)
    stopped = [x for x in said.splitlines() if x.startswith("cluster_node.sh: ")]
    assert len(stopped) == 3 and all(" stopped " in x for x in stopped), said[-3000:]
    # the worker's Ray stopped by `stop` itself, well before it would give up on the head's GCS
    # by itself (Ray's 60 s reconnect timeout)
    only_sshd_within(up, "worker", 20, said)
    said += up.ray("down", "-y", "-n", up.name, str(up.config))
    for host in ("head", "worker"):  # an SSH session of the launcher's ends with ControlPersist
        only_sshd_within(up, host, 60, said)
