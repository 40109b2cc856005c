"""Where a run's time goes: wall-clock marks and summed phases, appended to ``timings.jsonl`` in
the run's directory by whichever process reaches them (a sweep's driver and its rank-0 worker
write to the same file). ``benchmarks/sweep_overhead.py`` reads them back; nothing in training
depends on them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE = "timings.jsonl"


def mark(out_dir: str | Path, name: str, **facts: object) -> None:
    """Append one wall-clock mark (``time.time()``: comparable across processes on a host), with
    any ``facts`` (where it ran)."""
    write(out_dir, {"mark": name, "t": time.time(), "pid": os.getpid(), **facts})


def write(out_dir: str | Path, record: dict) -> None:
    path = Path(out_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read(out_dir: str | Path) -> tuple[dict[str, float], dict[str, float]]:
    """``(marks, phases)``: the last time each mark was reached, and each phase's seconds summed
    over the records (a restarted trial writes them again)."""
    marks: dict[str, float] = {}
    phases: dict[str, float] = {}
    path = Path(out_dir) / FILE
    if not path.exists():
        return marks, phases
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "mark" in record:
            marks[record["mark"]] = record["t"]
        for name, seconds in record.get("phases", {}).items():
            phases[name] = phases.get(name, 0.0) + seconds
    return marks, phases


class Stopwatch:
    """Sums the seconds spent in named phases: ``with watch.phase("evaluation"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
