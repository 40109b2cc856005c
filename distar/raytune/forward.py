"""The trial driver's side of a trial's MLflow run: it reads the records rank 0 writes
(:mod:`distar.runtime.records`) and hands each, once, to a training-loop callback (the run's
:class:`~distar.raytune.mlflow_logger.MlflowLogger`).

Why in the driver and not in the worker: a worker that logged to MLflow imported it and opened
its store (~2.5 s of every trial's start on 2 cores: ``benchmarks/sweep_overhead.py``) while
the driver, which already holds both, waited on it; and a slow tracking store no longer holds a
training step. The driver forwards only while its attempt owns the trial (:mod:`.fence`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distar.config.benchmarks import WORLD_ITEMS
from distar.raytune.fence import owns
from distar.runtime.callbacks import Callback
from distar.runtime.records import META, read_items, read_records, record_values


class RecordForwarder:
    """Hands each record of a trial's folder to ``sink`` as the loop would have: ``on_step``,
    ``on_items`` + ``on_eval``, ``on_benchmarks``, ``on_train_end``. A record is handed on once
    per driver (keyed by kind, step and benchmark); a record an earlier attempt wrote and its
    driver forwarded is the sink's to skip (MlflowLogger: steps the run holds already)."""

    def __init__(self, out_dir: Path, sink: Callback, attempt: str) -> None:
        self.out_dir, self.sink, self.attempt = Path(out_dir), sink, attempt
        self.forwarded: set[tuple] = set()

    def start(self, step: int) -> None:
        """Before the first poll: the attempt resumes at ``step`` (MlflowLogger: read the
        steps its run holds)."""
        self.sink.on_train_start(max(step, 0), 0)

    def poll(self) -> list[dict[str, Any]]:
        """Forward what is new, unless a later attempt owns the trial; returns the records read
        (the driver reports to Tune from the very records it forwarded)."""
        records = read_records(self.out_dir)
        if not owns(self.out_dir, self.attempt):
            return records
        for record in records:
            key = (record["kind"], record["step"], record.get(f"{META}benchmark"))
            if key not in self.forwarded:
                self.forwarded.add(key)
                self._forward(record)
        return records

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
            self.sink.on_benchmarks(step, [self._benchmark(record, step, values)])
        elif kind == "end":
            self.sink.on_step(step, {"train/seconds": record[f"{META}seconds"]})
            self.sink.on_train_end(step, values)

    def _benchmark(self, record: dict[str, Any], step: int, summary: dict[str, float]):
        import torch

        from distar.evaluation.harness import BenchmarkResult

        name, grid = record[f"{META}benchmark"], record.get(f"{META}grid")
        return BenchmarkResult(
            benchmark=name,
            rows=read_items(self.out_dir, name, step),
            summary=summary,
            examples=torch.empty(0),
            prompts_source=record.get(f"{META}source", ""),
            grid=self.out_dir / grid if grid else None,
        )
