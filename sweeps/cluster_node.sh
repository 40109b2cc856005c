#!/usr/bin/env bash
# What every command in cluster.yaml runs on a node. Each of those commands is a fresh SSH login
# shell, so the environment is named here, once, instead of hoping `python`, `ray` and `mlflow`
# are on a login PATH:
#
#   cluster_node.sh setup       make the venv (~/distar-venv; DISTAR_VENV) and install this checkout
#   cluster_node.sh head        start Ray's head and the MLflow server (stopping the pair this
#                               script started before, if any)
#   cluster_node.sh worker      join the head at $RAY_HEAD_IP (the cluster launcher sets it)
#   cluster_node.sh stop        stop what `head` / `worker` started, by the PIDs they wrote; on a
#                               head `ray up` made, each worker_ip's too (over SSH, as `ray up`)
#   cluster_node.sh run CMD...  run CMD in the checkout with that environment (`ray exec`, jobs)
#
# Ray's token authentication is on deliberately: RAY_AUTH_MODE=token with the token cluster.yaml
# mounts at ~/distar-cluster/ray_auth_token (made where you run `ray up` by `ray get-auth-token
# --generate`). Ports come from the node's environment when set (DISTAR_RAY_PORT,
# DISTAR_DASHBOARD_PORT, DISTAR_MLFLOW_PORT), else Ray's and MLflow's usual 6379, 8265, 5000;
# DISTAR_RAY_CPUS, when set, is the CPUs the node offers Ray (else all it has).
# Nothing here stops a process it did not start: no `ray stop` (it stops every Ray of the user
# on the machine), no `pkill`.
set -euo pipefail

DISTAR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DISTAR_VENV:-$HOME/distar-venv}
STATE=$HOME/distar-cluster  # the token, PID files and logs of this node's processes
RUNS=$HOME/distar-runs      # the MLflow server's store and artifacts (head)
RAY_PORT=${DISTAR_RAY_PORT:-6379}
CPUS=()
if [ -n "${DISTAR_RAY_CPUS:-}" ]; then CPUS=(--num-cpus="$DISTAR_RAY_CPUS"); fi
DASHBOARD_PORT=${DISTAR_DASHBOARD_PORT:-8265}
MLFLOW_PORT=${DISTAR_MLFLOW_PORT:-5000}
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$STATE/ray_auth_token
# Ray 2.60's `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve's
# replicas, which distar runs none of), so `stop` waited out its 16 s grace and KILLed every
# node (measured: 16 s a node; without the drain the group is gone in ~3.5 s)
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}

activate() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "cluster_node.sh: no venv at $VENV: run 'cluster_node.sh setup' first" >&2
        exit 1
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
}

head_ip() {  # the head_ip cluster.yaml names (on-premise), else Ray's address for this node
    python - <<'EOF'
import os

import yaml
from ray.util import get_node_ip_address

path = os.path.expanduser("~/ray_bootstrap_config.yaml")
provider = yaml.safe_load(open(path)).get("provider", {}) if os.path.exists(path) else {}
print(provider.get("head_ip") or get_node_ip_address())
EOF
}

raise_file_limit() {  # Ray wants many open files; the soft limit may go no higher than the hard
    ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)"
}

detach() {  # detach NAME CMD...: CMD in a session of its own, its PID (= its group) in NAME.pid
    local name=$1
    shift
    rm -f "$STATE/$name.pid"
    setsid bash -c 'echo $$ > "$0"; exec "$@"' "$STATE/$name.pid" "$@" \
        < /dev/null > "$STATE/$name.log" 2>&1 &
    for _ in $(seq 50); do [ -s "$STATE/$name.pid" ] && return 0; sleep 0.1; done
    echo "cluster_node.sh: $name did not start (see $STATE/$name.log)" >&2
    exit 1
}

wait_until() {  # wait_until WHAT CMD...: up to 180 s for CMD to succeed
    local what=$1
    shift
    for _ in $(seq 180); do
        if "$@" > /dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "cluster_node.sh: $what did not come up in 180 s; its log: $STATE/$what.log" >&2
    tail -n 20 "$STATE/$what.log" >&2 || true
    exit 1
}

stop_started() {  # stop_started NAME: TERM the group of the process NAME.pid names, then KILL
    local file=$STATE/$1.pid pid started=$SECONDS
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    # a PID file outlives a reboot; only a live process of ours in its own group is stopped
    if [ "$(ps -o pgid= -p "$pid" 2> /dev/null | tr -d ' ')" = "$pid" ]; then
        # as `ray stop` does: every process TERMed at once, KILLed after its 16 s grace period.
        # (TERM to `ray start --block` alone left its node running for 30 s and more, measured)
        kill -TERM -- "-$pid" 2> /dev/null || true
        for _ in $(seq 32); do kill -0 -- "-$pid" 2> /dev/null || break; sleep 0.5; done
        if kill -KILL -- "-$pid" 2> /dev/null; then
            echo "cluster_node.sh: $1 outlived its 16 s grace: KILLed"
        else
            echo "cluster_node.sh: stopped $1 in $((SECONDS - started)) s"
        fi
    fi
    rm -f "$file"
}

forget_address() {  # the address file `ray start` writes would direct later `ray` commands here
    local file=/tmp/ray/ray_current_cluster
    if [ -f "$file" ] && grep -q ":$RAY_PORT\$" "$file"; then rm -f "$file"; fi
}

stop_workers() {  # on a `ray up` head: every worker_ip runs its own `stop`, over the launcher's SSH
    local config=$HOME/ray_bootstrap_config.yaml user key ip
    [ -f "$config" ] || return 0
    activate
    # `ray down` stops no on-premise worker (the local provider only forgets it): its Ray would
    # outlive the cluster
    python - "$config" << 'EOF' | while read -r user key ip; do
import sys

import yaml
config = yaml.safe_load(open(sys.argv[1]))
auth = config["auth"]
for ip in config["provider"].get("worker_ips", []):
    print(auth["ssh_user"], auth.get("ssh_private_key", "~/ray_bootstrap_key.pem"), ip)
EOF
        ssh -n -i "${key/#\~/$HOME}" -o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=10 \
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
            "$user@$ip" 'bash ~/distar/sweeps/cluster_node.sh stop --this-node' ||
            echo "cluster_node.sh: could not stop the worker at $ip; run 'cluster_node.sh stop' there" >&2
    done
}

start_head() {
    local ip
    mkdir -p "$STATE" "$RUNS"
    stop_started mlflow
    stop_started ray
    ip=$(head_ip)
    raise_file_limit
    local autoscaling=()
    if [ -f "$HOME/ray_bootstrap_config.yaml" ]; then  # written by `ray up`
        autoscaling=(--autoscaling-config="$HOME/ray_bootstrap_config.yaml")
    fi
    # Ray 2.60's autoscaler v2 does not launch the worker_ips of an on-premise (local provider)
    # cluster: it logs "Adding 1 nodes to satisfy min count" every 5 s and starts none (found
    # by tests/test_cluster_netns.py); the v1 autoscaler sets them up over SSH
    RAY_enable_autoscaler_v2=0 \
        detach ray ray start --head --block --disable-usage-stats --node-ip-address="$ip" \
        --port="$RAY_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        "${CPUS[@]}" "${autoscaling[@]}"
    wait_until ray ray status --address "$ip:$RAY_PORT"
    # MLflow 3 answers 403 "Invalid Host header" to a Host it does not know: the head's address
    # (which need not be a private one) and the SSH tunnel's localhost are allowed;
    # --app-name distar: its UI opens in the training layout (distar/track/mlflow_app.py);
    # MLflow's server-side jobs (GenAI evaluation, prompt optimisation) are off unless asked
    # for: distar runs none, and they are 8 Python processes more on the head
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
        detach mlflow mlflow server --app-name distar --host "$ip" --port "$MLFLOW_PORT" \
            --allowed-hosts "$ip,$ip:$MLFLOW_PORT,localhost:*,127.0.0.1:*" \
            --backend-store-uri "sqlite:///$RUNS/mlflow.db" \
            --artifacts-destination "$RUNS/mlartifacts"
    wait_until mlflow python -c "import urllib.request as u; u.urlopen('http://$ip:$MLFLOW_PORT/health', timeout=5)"
    echo "Ray head: $ip:$RAY_PORT (dashboard 127.0.0.1:$DASHBOARD_PORT)"
    echo "MLflow: http://$ip:$MLFLOW_PORT (store $RUNS)"
}

start_worker() {
    mkdir -p "$STATE"
    stop_started ray
    raise_file_limit
    detach ray ray start --block --disable-usage-stats --address="$RAY_HEAD_IP:$RAY_PORT" \
        "${CPUS[@]}"
    wait_until ray ray status --address "$RAY_HEAD_IP:$RAY_PORT"
    echo "joined the Ray head at $RAY_HEAD_IP:$RAY_PORT"
}

case "${1:-}" in
    setup)
        # the image's pip and setuptools when it has them (an offline node then installs the
        # checkout from what the image holds: a venv's own bundled setuptools may be too old to
        # build it without the index), else the venv's own
        if [ ! -x "$VENV/bin/python" ]; then
            python3 -m venv --system-site-packages --without-pip "$VENV"
            "$VENV/bin/python" -m pip --version > /dev/null 2>&1 || "$VENV/bin/python" -m ensurepip -q
        fi
        "$VENV/bin/python" -m pip install -q -e "$DISTAR_DIR[sweep,t2i]"
        ;;
    head) activate; start_head ;;
    worker) activate; start_worker ;;
    stop)
        # the head first: its autoscaler, while it runs, restarts a worker it finds stopped
        stop_started mlflow
        stop_started ray
        forget_address
        # --this-node: a worker whose home is shared with the head sees its bootstrap file too
        if [ "${2:-}" != --this-node ]; then stop_workers; fi
        ;;
    run)
        shift
        activate
        cd "$DISTAR_DIR"
        # this cluster, never whatever /tmp/ray/ray_current_cluster names (a job has its own)
        export RAY_ADDRESS=${RAY_ADDRESS:-$(head_ip):$RAY_PORT}
        exec "$@"
        ;;
    *)
        sed -n '2,18p' "$0"
        exit 2
        ;;
esac
