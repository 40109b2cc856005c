"""`ray up cluster.yaml` the way the README runs it, against a real SSH server on 127.0.0.1.

The project's own cluster.yaml is rendered with its CHANGE-ME values filled (head 127.0.0.1, no
workers, this machine's user and a fresh key), then: `ray get-auth-token --generate`, `ray up`,
the smoke sweep through `ray job submit`, the MLflow server on the head checked for the parent
run, every child run and the report, and the cluster stopped by `cluster_node.sh stop`, which
stops what it started by PID. The machine is shared, so nothing here runs `ray stop` or
`pkill`: a leftover is killed by the PIDs this test's processes wrote.

How the SSH node is made without touching this machine's accounts: sshd (from Debian's
openssh-server) listens on 127.0.0.1 on a free port with its own host key and authorized key,
and gives the session a HOME of its own (SetEnv), so the node's ~/distar, ~/distar-venv and
~/distar-runs live under the test's tmp folder. OpenSSH's client reads ~/.ssh/config from the
passwd entry, not $HOME, so the port reaches `ray up` through Ray's `auth.ssh_proxy_command` (a
relay to that port) instead of a client config entry. The node's login shell finds this
machine's Python as a real node's finds its own (a ~/.bash_profile line); the node's ports come
from its environment (DISTAR_RAY_PORT, ...), free ones, as a session Ray may hold Ray's usual.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweeps_common import TINY, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
RELAY = """import socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while b := sys.stdin.buffer.raw.read(65536):
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while b := s.recv(65536):
    sys.stdout.buffer.write(b)
    sys.stdout.buffer.flush()
"""

if not (SSHD.exists() and shutil.which("rsync")):
    # CI installs both (.ci/run); elsewhere the test says what it needs
    pytestmark = pytest.mark.skipif(
        not os.environ.get("CI"), reason="needs openssh-server and rsync (apt-get install -y ...)"
    )


def wait_for_port(port: int, seconds: float = 30) -> None:
    import socket

    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def start_sshd(tmp: Path, home: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, int, Path]:
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True
        )
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    port = free_port()
    env = " ".join(f"{k}={v}" for k, v in ports.items())
    (tmp / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {tmp / "host_key"}
PidFile {tmp / "sshd.pid"}
AuthorizedKeysFile {tmp / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv HOME={home} {env}
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # Debian's sshd refuses to start without it
    sshd = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(tmp / "sshd_config")], stderr=open(tmp / "sshd.log", "w")
    )
    wait_for_port(port)
    return sshd, port, tmp / "client_key"


def render(tmp: Path, key: Path, ssh_port: int) -> Path:
    """The project's cluster.yaml with its CHANGE-ME values filled for this machine."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["max_workers"] = 0
    (tmp / "relay.py").write_text(RELAY)
    relay = f"{sys.executable} {tmp / 'relay.py'} {ssh_port}"
    config["auth"] = {
        "ssh_user": getpass.getuser(),
        "ssh_private_key": str(key),
        "ssh_proxy_command": relay,
    }
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def kill_started(home: Path) -> None:
    """The test's own fallback: every process group a node's PID file names."""
    for pid_file in (home / "distar-cluster").glob("*.pid"):
        pid = int(pid_file.read_text())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def ssh_node(tmp_path):
    home, local = tmp_path / "node-home", tmp_path / "local-home"
    home.mkdir()
    local.mkdir()
    # the node's login shell finds a Python as a real node's does (there: the image's python3)
    (home / ".bash_profile").write_text(f'export PATH="{BIN}:$PATH"\n')
    ports = {
        "DISTAR_RAY_PORT": free_port(),
        "DISTAR_DASHBOARD_PORT": free_port(),
        "DISTAR_MLFLOW_PORT": free_port(),
    }
    sshd, ssh_port, key = start_sshd(tmp_path, home, ports)
    cluster = f"distar-ci-{os.getpid()}"
    try:
        yield render(tmp_path, key, ssh_port), cluster, home, local, ports
    finally:
        kill_started(home)
        sshd.terminate()
        sshd.wait(timeout=30)
        from ray.autoscaler._private.local.config import get_lock_path, get_state_path

        for path in (get_lock_path(cluster), get_state_path(cluster)):
            Path(path).unlink(missing_ok=True)


def ray(args: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    start = time.time()
    done = subprocess.run(
        [str(BIN / "ray"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"ray {args[0]} failed:\n{out[-5000:]}"
    return out, time.time() - start


def test_ray_up_runs_the_smoke_sweep_into_the_heads_mlflow(ssh_node):
    from analysis.runs import load_runs

    config, cluster, home, local, ports = ssh_node
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    # the launcher's machine: its own home (the token), and Ray's token mode for the job client
    env.update(HOME=str(local), RAY_AUTH_MODE="token", PATH=f"{BIN}:{env['PATH']}")
    took = {}
    _, took["token"] = ray(["get-auth-token", "--generate"], env, 60)
    up, took["ray up"] = ray(
        ["up", "-y", "--no-config-cache", "-n", cluster, str(config)], env, 900
    )
    mlflow_uri = f"http://127.0.0.1:{ports['DISTAR_MLFLOW_PORT']}"
    assert mlflow_uri in up
    assert (home / "distar" / "sweeps" / "cluster_node.sh").exists()
    assert (home / "distar-venv" / "bin" / "python").exists()  # the environment setup named
    assert not (home / "distar" / ".git").exists() and not (home / "distar" / "runs").exists()
    flags = " ".join(f"--set={k}={v}" for k, v in TINY.items())
    storage = home / "shared-storage"
    sweep = (
        f"bash ~/distar/sweeps/cluster_node.sh run python sweeps/ablation_grid.py "
        f"--smoke-test --storage {storage} --tracking-uri {mlflow_uri} {flags}"
    )
    dashboard = f"http://127.0.0.1:{ports['DISTAR_DASHBOARD_PORT']}"
    # `bash -c`: the entrypoint's ~ is the head's (a laptop's shell would expand its own)
    logs, took["job"] = ray(
        ["job", "submit", "--address", dashboard, "--", "bash", "-c", sweep], env, 900
    )
    assert "| KL, no CFG | 2 |" in logs  # the printed report is complete

    runs = load_runs(mlflow_uri, "distar-table2", "table2")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("distar-table2").experiment_id],
        "tags.`distar.role` = 'parent'",
    )
    assert set(runs["tags.mlflow.parentRunId"]) == {parent.info.run_id}
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/table2.md" in report
    # the artifacts went through the server into the head's store, not the job's folder
    assert list((home / "distar-runs" / "mlartifacts").rglob("table2.md"))

    # token authentication is on: a client without the token is turned away
    bare = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    bare["HOME"] = str(local / "elsewhere")
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", dashboard],
        env=bare,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "token" in (refused.stdout + refused.stderr).lower()

    pids = [int(p.read_text()) for p in (home / "distar-cluster").glob("*.pid")]
    assert len(pids) == 2  # Ray's head and MLflow, each in a group of its own
    _, took["stop"] = ray(
        ["exec", "-n", cluster, str(config), "bash ~/distar/sweeps/cluster_node.sh stop"], env, 300
    )
    assert not any(alive(pid) for pid in pids)
    print("cluster timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in took.items()))
