"""How the training loop reports: a small callback interface that Ray and MLflow plug into
without the loop knowing them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_train_start(self, step: int, total_steps: int) -> None: ...

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_items(self, step: int, name: str, rows) -> None:
        """The world's per-sample values at an evaluation (a ``pandas.DataFrame`` from
        ``World.item_scores``, keyed to pair across runs), rank 0 only."""

    def on_benchmarks(self, step: int, results: list) -> None:
        """Benchmark results (``distar.evaluation.harness.BenchmarkResult``), rank 0 only."""

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over generator steps, showing the latest losses."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_start(self, step: int, total_steps: int) -> None:
        self.bar = tqdm(total=total_steps, initial=step, desc="DI* steps", dynamic_ncols=True)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            shown = {
                k.removeprefix("train/"): f"{v:.3g}"
                for k, v in metrics.items()
                if k.startswith("train/loss/")
            }
            self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.close()


def keep_until(path: Path, step: int) -> None:
    """Drop the records of a JSON-lines file written after ``step``."""
    if path.exists():
        kept = [r for r in path.read_text().splitlines() if json.loads(r)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


class JsonlLogger(Callback):
    """Appends every report to ``metrics.jsonl``: one JSON object a line, with its kind; and
    every evaluation's per-sample rows (the world's, each benchmark's) to ``items/<name>.jsonl``,
    one row a line with its step: the items ``distar.track.paired`` pairs on."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.items = Path(out_dir) / "items"

    def on_train_start(self, step: int, total_steps: int) -> None:
        """A run resumed at ``step`` replays what follows it: drop those records first. The
        folder is made here, not earlier: a run refused while it is built leaves nothing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path in [self.path, *self.items.glob("*.jsonl")]:
            keep_until(path, step)

    def _write(self, kind: str, step: int, metrics: dict[str, float]) -> None:
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)  # also without on_train_start
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._write("train", step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        self._write("eval", step, metrics)

    def on_items(self, step: int, name: str, rows) -> None:
        self.items.mkdir(parents=True, exist_ok=True)
        with (self.items / f"{name}.jsonl").open("a") as f:
            rows.assign(step=step).to_json(f, orient="records", lines=True)

    def on_benchmarks(self, step: int, results: list) -> None:
        for result in results:  # items first: a record read means its items are there
            self.on_items(step, result.benchmark, result.rows)
            self._write("benchmark", step, result.summary)
