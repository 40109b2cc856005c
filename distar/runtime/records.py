"""A run's records on disk, as rank 0 writes them (:class:`~distar.runtime.callbacks.JsonlLogger`)
and a sweep's trial driver reads them (for Tune's reports and the trial's MLflow run).

``metrics.jsonl``: one JSON object a line, with its ``kind`` (``train``, ``eval``, ``benchmark``,
``end``), its ``step``, its values, and fields named ``@...`` that are not values: the files an
evaluation drew (``@artifacts``, paths relative to the run's folder), a benchmark's name, prompt
file and image grid (``@benchmark``, ``@source``, ``@grid``), the loop's seconds (``@seconds``).
``items/<name>.jsonl``: per-sample rows with their step, written before the record they belong
to (a record read means its items are there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORDS = "metrics.jsonl"
ITEMS = "items"
META = "@"  # a record field that is not a value


def complete_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's objects, in order; none if it is missing, and a last line still
    being written is not read."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines]


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every complete record, in order."""
    return complete_lines(Path(out_dir) / RECORDS)


def record_values(record: dict[str, Any]) -> dict[str, float]:
    """A record's values (a non-finite one is written as its string: ``"nan"``)."""
    return {k: float(v) for k, v in record.items() if k not in ("kind", "step") and k[0] != META}


def read_items(out_dir: Path, name: str, step: int):
    """The rows of ``items/<name>.jsonl`` written at ``step``, without their step (None: no
    such rows)."""
    import pandas as pd

    rows = [r for r in complete_lines(Path(out_dir) / ITEMS / f"{name}.jsonl") if r["step"] == step]
    return pd.DataFrame(rows).drop(columns="step") if rows else None


def grid_file(benchmark: str, step: int) -> str:
    """The file name of a benchmark's image grid at ``step`` (its MLflow artifact under eval/)."""
    return f"{benchmark}_grid.png" if step == 0 else f"{benchmark}_grid_step{step:07d}.png"


def relative(path: Path, out_dir: Path) -> str:
    """``path`` as a record names it: relative to the run's folder when inside it (a trial's
    folder is read on another node, where it may be mounted elsewhere)."""
    path, out_dir = Path(path), Path(out_dir)
    return str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path)
