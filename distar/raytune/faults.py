"""Fault injection for a running trial, to check that a sweep survives what clusters do.

A file ``inject_fault.json`` in a trial's directory, e.g. ``{"step": 12, "action": "kill"}``,
makes the trial's rank-0 worker, once it has logged ``step``, do ``action``:

- ``kill``: SIGKILL its own process (a worker or node lost mid-trial);
- ``hang``: stop making progress (to kill the sweep's driver from outside at a known point);
- ``pause``: stop until a later attempt claims the trial (:mod:`distar.raytune.fence`), for at
  most ``seconds``, then go on (an attempt that is still running, in wall time whatever the
  machine's speed, when its retry takes the trial over: its next write meets the fence).

``"node": IP`` in the file fires the fault only on the node of that address (the one a test
cuts off); without it, on any. The file is consumed (deleted) before the fault fires, so the
restarted trial runs through. Nothing reads it unless the file exists; the tests in
``tests/test_faults.py`` and ``tests/test_cluster_up.py`` write it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from distar.raytune.fence import owns
from distar.runtime.callbacks import Callback

FAULT_FILE = "inject_fault.json"
ACTIONS = ("kill", "hang", "pause")


def inject(trial_dir: Path, step: int, action: str, seconds: float = 0.0, node: str = "") -> None:
    if action not in ACTIONS:
        raise ValueError(f"action: got {action!r}; allowed: {ACTIONS}")
    if (action == "pause") != (seconds > 0):
        raise ValueError(f"seconds: got {seconds}; a pause (only) lasts > 0 s")
    trial_dir.mkdir(parents=True, exist_ok=True)
    fault = {"step": step, "action": action, **({"seconds": seconds} if seconds else {})}
    (trial_dir / FAULT_FILE).write_text(json.dumps({**fault, **({"node": node} if node else {})}))


class FaultInjector(Callback):
    """Fires the fault described by ``<out_dir>/inject_fault.json`` (if any) at its step, on
    ``node`` (this worker's node address) if the fault names a node; ``attempt``: this attempt's
    fencing token (a pause ends once the trial folder names another)."""

    def __init__(self, out_dir: Path, attempt: str = "", node: str = "") -> None:
        path = Path(out_dir) / FAULT_FILE
        self.path, self.attempt = path, attempt
        fault = json.loads(path.read_text()) if path.exists() else None
        self.fault = fault if fault and fault.get("node", node) == node else None

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.fault is None or step < self.fault["step"]:
            return
        self.path.unlink(missing_ok=True)  # consumed: the restarted trial runs through
        self.path.with_suffix(".fired").write_text(json.dumps({**self.fault, "pid": os.getpid()}))
        if self.fault["action"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault["action"] == "pause":
            self.pause(self.fault["seconds"])
            self.fault = None
            return
        while True:  # hang
            time.sleep(3600)

    def pause(self, seconds: float) -> None:
        """Until a later attempt claims the trial folder, for at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and owns(self.path.parent, self.attempt):
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
