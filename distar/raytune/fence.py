"""Which attempt of a trial may write to its folder: a fencing token.

A worker cut off by a network partition keeps training: its node's Ray lives on until it hears
from the cluster again (up to Ray's 60 s GCS reconnect timeout) and the trial folder is on
storage every node sees. Meanwhile Tune has retried the trial elsewhere from its last
checkpoint. Without a fence both attempts would append the same steps to ``metrics.jsonl``,
write checkpoints over each other and, once the partition heals, send the old attempt's
buffered values to MLflow again.

Each attempt's driver :func:`claim`\\ s the trial (``attempt`` in its folder: a new token, written
atomically); the attempt's workers carry that token in a :class:`Fence`, the first callback
of their loop, which stops them (:class:`SupersededError`) before any report, evaluation record
or checkpoint once the folder names a later attempt; a superseded driver leaves the MLflow run
alone. ``superseded.jsonl`` records each attempt stopped so.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from distar.runtime.callbacks import Callback

ATTEMPT_FILE = "attempt"
SUPERSEDED_FILE = "superseded.jsonl"


class SupersededError(RuntimeError):
    """A later attempt of this trial owns its folder: this one must not write to it."""


def claim(out_dir: Path) -> str:
    """Make the calling attempt the trial's owner; returns its token."""
    token = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = out_dir / f".{ATTEMPT_FILE}.{token}"
    staged.write_text(token)
    os.replace(staged, out_dir / ATTEMPT_FILE)  # readers see the old token or the new one
    return token


def owns(out_dir: Path, token: str) -> bool:
    path = out_dir / ATTEMPT_FILE
    return not path.exists() or path.read_text() == token  # no file: no attempt claimed it


class Fence(Callback):
    """Stops this attempt's loop before it writes anything once a later attempt has claimed
    the trial (a file read per report, evaluation and checkpoint: nothing per step)."""

    def __init__(self, out_dir: Path, token: str) -> None:
        self.out_dir, self.token = Path(out_dir), token

    def check(self, step: int, before: str) -> None:
        if owns(self.out_dir, self.token):
            return
        record = {"token": self.token, "step": step, "before": before, "pid": os.getpid(),
                  "host": socket.gethostname()}  # fmt: skip
        with (self.out_dir / SUPERSEDED_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        raise SupersededError(
            f"attempt {self.token} of trial {self.out_dir.name} stopped at step {step} "
            f"(before its {before}): a later attempt owns the trial"
        )

    def on_train_start(self, step: int, total_steps: int) -> None:
        self.check(step, "start")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self.check(step, "report")

    def on_items(self, step: int, name: str, rows: Any) -> None:
        self.check(step, "evaluation")

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: Any) -> None:
        self.check(step, "evaluation")

    def on_benchmarks(self, step: int, results: list) -> None:
        self.check(step, "benchmarks")

    def before_checkpoint(self, step: int) -> None:
        self.check(step, "checkpoint")

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        self.check(step, "final record")
