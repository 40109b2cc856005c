"""One way to start Ray for everything distar runs on it (sweeps, scale-out evaluation): join
the cluster ``RAY_ADDRESS`` names, else start a fresh local one that frees stopped trials'
resources."""

from __future__ import annotations

import os

# Ray Train v2 hands reports to Tune once per controller health check (~2 s by default). Nothing
# is dropped, but every trial waits on it: measured (benchmarks/ray_facts.py), 10 reports 0.2 s
# apart took 43.1 s end to end with the default interval and 28.8 s with 0.1 s.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"


def start_ray(num_cpus: int | None) -> None:
    """Join a cluster if RAY_ADDRESS says so, else start a local one (:func:`start_local_ray`)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        start_local_ray(num_cpus)


def check_ray_address(timeout: float = 3.0) -> None:
    """A ``RAY_ADDRESS`` of the form HOST:PORT must accept a connection within seconds:
    ``ray.init`` on a dead address waits minutes before it gives up."""
    import socket

    address = os.environ.get("RAY_ADDRESS", "")
    host, sep, port = address.rpartition(":")
    if not sep or "/" in address or not port.isdigit():  # "auto", "ray://...", "": Ray decides
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {address} ({error.strerror or error})") from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_ray(num_cpus: int | None) -> None:
    """A fresh local Ray (never one a ``ray start`` left on this machine) with its dashboard on
    127.0.0.1, whose processes are told where that dashboard is.

    Ray Train's placement-group cleaner (it frees a trial's CPUs and GPUs when a scheduler such
    as ASHA stops the trial) asks the state API, which looks for the cluster in
    ``/tmp/ray/ray_current_cluster``: a ``ray start`` writes it and a local Ray does not, so a
    file left by an earlier cluster made every cleaner fail and stopped trials held their
    resources for good (measured: a search on 2 CPUs stalled after the first ASHA stop).
    ``RAY_API_SERVER_ADDRESS`` in the environment the local Ray starts with comes first."""
    import ray

    port = free_port()
    # inherited by Ray's processes, not kept in this one's: a later Ray (a test's) must not see it
    env = {
        API_SERVER_VARIABLE: f"http://127.0.0.1:{port}",
        # one machine is never preempted: one actor process fewer per trial
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get(
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"
        ),
    }
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            log_to_driver=False,
        )
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
