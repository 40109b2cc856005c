"""Fault injection for a running trial, to check that a sweep survives what clusters do.

A file ``inject_fault.json`` in a trial's directory, e.g. ``{"step": 12, "action": "kill"}``,
makes the trial's rank-0 worker, once it has logged ``step``, do ``action``:

- ``kill``: SIGKILL its own process (a worker or node lost mid-trial);
- ``hang``: stop making progress (to kill the sweep's driver from outside at a known point).

The file is consumed (deleted) before the fault fires, so the restarted trial runs through.
Nothing reads it unless the file exists; the tests in ``tests/test_faults.py`` write it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from distar.runtime.callbacks import Callback

FAULT_FILE = "inject_fault.json"
ACTIONS = ("kill", "hang")


def inject(trial_dir: Path, step: int, action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"action: got {action!r}; allowed: {ACTIONS}")
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / FAULT_FILE).write_text(json.dumps({"step": step, "action": action}))


class FaultInjector(Callback):
    """Fires the fault described by ``<out_dir>/inject_fault.json`` (if any) at its step."""

    def __init__(self, out_dir: Path) -> None:
        path = Path(out_dir) / FAULT_FILE
        self.path = path
        self.fault = json.loads(path.read_text()) if path.exists() else None

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.fault is None or step < self.fault["step"]:
            return
        self.path.unlink(missing_ok=True)  # consumed: the restarted trial runs through
        self.path.with_suffix(".fired").write_text(json.dumps({**self.fault, "pid": os.getpid()}))
        if self.fault["action"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:  # hang
            time.sleep(3600)
