"""The trial driver's side of a trial's MLflow run: it reads the records rank 0 writes
(:mod:`distar.runtime.records`) and hands each, once, to a training-loop callback (the run's
:class:`~distar.raytune.mlflow_logger.MlflowLogger`).

Why in the driver and not in the worker: a worker that logged to MLflow imported it and opened
its store (~2.5 s of every trial's start on 2 cores: ``benchmarks/sweep_overhead.py``) while
the driver, which already holds both, waited on it; and a slow tracking store no longer holds a
training step. The driver forwards only while its attempt owns the trial (:mod:`.fence`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from distar.config.benchmarks import WORLD_ITEMS
from distar.raytune.fence import owns
from distar.runtime.callbacks import Callback
from distar.runtime.records import META, read_items, read_records, record_values


class RecordForwarder:
    """Hands each record of a trial's folder to ``sink`` as the loop would have: ``on_step``,
    ``on_items`` + ``on_eval``, ``on_benchmarks``, ``on_train_end``, once per driver (keyed by
    kind, step and benchmark), each only while this attempt owns the trial.

    Which records: this attempt's (``@attempt``), and earlier attempts' up to the step this one
    resumes at (their drivers may have died before forwarding the last of them; the sink skips
    what its run holds: MlflowLogger, steps already logged). An earlier attempt's records after
    that step are this attempt's to write again: its worker drops them when it starts."""

    def __init__(self, out_dir: Path, sink: Callback, attempt: str) -> None:
        self.out_dir, self.sink, self.attempt = Path(out_dir), sink, attempt
        self.forwarded: set[tuple] = set()
        self.resumed = 0

    def start(self, step: int) -> None:
        """Before the first poll: the attempt resumes at ``step`` (MlflowLogger: read the
        steps its run holds)."""
        self.resumed = max(step, 0)
        self.sink.on_train_start(self.resumed, 0)

    def poll(self) -> list[dict[str, Any]]:
        """Forward what is new, unless a later attempt owns the trial; returns the records read
        (the driver reports to Tune from the very records it forwarded)."""
        records = read_records(self.out_dir)
        for record in records:
            key = (record["kind"], record["step"], record.get(f"{META}benchmark"))
            if key in self.forwarded or not self._ours(record):
                continue
            if not owns(self.out_dir, self.attempt):  # each record: a round can take long
                break
            self.forwarded.add(key)
            self._forward(record)
        return records

    def _ours(self, record: dict[str, Any]) -> bool:
        return record.get(f"{META}attempt") == self.attempt or record["step"] <= self.resumed

    def _forward(self, record: dict[str, Any]) -> None:
        kind, step, values = record["kind"], record["step"], record_values(record)
        if kind == "train":
            self.sink.on_step(step, values)
        elif kind == "eval":
            items = read_items(self.out_dir, WORLD_ITEMS, step)
            if items is not None:
                self.sink.on_items(step, WORLD_ITEMS, items)
            drawn = record.get(f"{META}artifacts", {})
            self.sink.on_eval(step, values, {k: self.out_dir / p for k, p in drawn.items()})
        elif kind == "benchmark":
            result = self._benchmark(record, step, values)
            if result is not None:
                self.sink.on_benchmarks(step, [result])
        elif kind == "end":
            self.sink.on_step(step, {"train/seconds": record[f"{META}seconds"]})
            self.sink.on_train_end(step, values)

    def _benchmark(self, record: dict[str, Any], step: int, summary: dict[str, float]):
        """The benchmark's result as its tables need it; None (said) for a record without its
        name or rows (written by a distar before records named their benchmark)."""
        import torch

        from distar.evaluation.harness import BenchmarkResult

        name, grid = record.get(f"{META}benchmark"), record.get(f"{META}grid")
        rows = read_items(self.out_dir, name, step) if name else None
        if rows is None:
            print(
                f"MLflow: a benchmark record at step {step} of {self.out_dir.name} names no "
                "benchmark or has no rows; its tables are not forwarded",
                file=sys.stderr,
            )
            return None
        return BenchmarkResult(
            benchmark=name,
            rows=rows,
            summary=summary,
            examples=torch.empty(0),
            prompts_source=record.get(f"{META}source", ""),
            grid=self.out_dir / grid if grid else None,
        )
