"""The training loop's callbacks: how it reports (a small interface that Ray and MLflow plug
into without the loop knowing them), and what it does around each update that is not the
method's step -- chosen in the config (:func:`training_callbacks`: the generator EMA, the LR
warm-up) and saved in checkpoints (``name``, ``state_dict``, ``tensors``)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from distar.config.keys import K
from distar.config.tree import Config
from distar.runtime.checkpoint import GENERATOR_EMA
from distar.runtime.records import ITEMS, META, RECORDS, grid_file, relative
from distar.util.images import image_grid


class Callback:
    """Override what you need; every hook is a no-op by default. A callback with state has a
    ``name`` (its key in a checkpoint): small state in ``state_dict`` (the checkpoint's
    ``trainer.pt``), weights in ``tensors`` (saved and sharded like the networks' and loaded
    back into those very tensors)."""

    name: ClassVar[str] = ""
    field: ClassVar[str] = ""  # the config field that turns it on (named when refused)

    def after_update(self, step: int) -> None:
        """After the updates of each training step (``step``: steps done), before any report."""

    def evaluation_weights(self):
        """A context manager around every evaluation (e.g. the EMA's weights swapped in)."""
        return nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def on_train_start(self, step: int, total_steps: int) -> None: ...

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None: ...

    def before_checkpoint(self, step: int) -> None:
        """Before a checkpoint is written (a callback may stop the run here: nothing written)."""

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


def keep_until(path: Path, step: int, final: bool = False) -> None:
    """Drop the records of a JSON-lines file written after ``step``; with ``final`` (a run
    resumed at its last step evaluates again) also what its evaluation wrote at ``step``: every
    record but the train report, every item row. Atomically: a trial's driver reads the file."""

    def kept(record: dict) -> bool:
        if final and record["step"] == step:
            return record.get("kind") == "train"
        return record["step"] <= step

    if path.exists():
        lines = [r for r in path.read_text().splitlines() if kept(json.loads(r))]
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text("".join(line + "\n" for line in lines))
        os.replace(staged, path)


class JsonlLogger(Callback):
    """Appends every report to ``metrics.jsonl`` and every evaluation's per-sample rows (the
    world's, each benchmark's) to ``items/<name>.jsonl`` (:mod:`distar.runtime.records`): what
    ``distar.track.paired`` pairs on, and all a sweep's trial driver hands on to MLflow."""

    def __init__(self, out_dir: Path, attempt: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.attempt = attempt  # a sweep trial's attempt (distar.raytune.fence), in each record
        self.path = self.out_dir / RECORDS
        self.items = self.out_dir / ITEMS
        self.started = time.perf_counter()

    def on_train_start(self, step: int, total_steps: int) -> None:
        """A run resumed at ``step`` replays what follows it (at its last step: its final
        evaluation): drop those records first. The folder is made here, not earlier: a run
        refused while it is built leaves nothing."""
        self.started = time.perf_counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path in [self.path, *self.items.glob("*.jsonl")]:
            keep_until(path, step, final=step >= total_steps)

    def _write(self, kind: str, step: int, metrics: dict[str, float], **meta: Any) -> None:
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()}
        meta["attempt"] = self.attempt
        fields = {f"{META}{k}": v for k, v in meta.items() if v}
        self.path.parent.mkdir(parents=True, exist_ok=True)  # also without on_train_start
        with self.path.open("a") as f:
            f.write(json.dumps({"kind": kind, "step": step, **clean, **fields}) + "\n")

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._write("train", step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float], artifacts: dict[str, Path]) -> None:
        paths = {name: relative(path, self.out_dir) for name, path in artifacts.items()}
        self._write("eval", step, metrics, artifacts=paths)

    def on_items(self, step: int, name: str, rows) -> None:
        self.items.mkdir(parents=True, exist_ok=True)
        with (self.items / f"{name}.jsonl").open("a") as f:
            rows.assign(step=step).to_json(f, orient="records", lines=True)

    def on_benchmarks(self, step: int, results: list) -> None:
        for result in results:  # items and grid first: a record read means they are there
            self.on_items(step, result.benchmark, result.rows)
            grid = None
            if result.examples.ndim == 4 and result.examples.shape[1] == 3:
                grid = self.out_dir / "plots" / grid_file(result.benchmark, step)
                grid.parent.mkdir(parents=True, exist_ok=True)
                image_grid(result.examples).save(grid)
            grid_path = relative(grid, self.out_dir) if grid else None
            meta = {"benchmark": result.benchmark, "source": result.prompts_source}
            self._write("benchmark", step, result.summary, **meta, grid=grid_path)

    def on_train_end(self, step: int, metrics: dict[str, float]) -> None:
        """The final evaluation's values, and the loop's seconds (for overhead benchmarks)."""
        self._write("end", step, metrics, seconds=time.perf_counter() - self.started)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP2 DTensor) parameter's local shard, in place; other tensors unchanged."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


class GeneratorEma(Callback):
    """An exponential moving average of the generator's trained weights, ``e <- d e + (1 - d)
    p`` after every step (``train.ema`` = d), in fp32 beside the fp32 masters (each rank its
    shards, when sharded). Evaluation swaps it in and back; checkpoints keep it."""

    name = GENERATOR_EMA
    field = K.train.ema

    def __init__(self, params: dict[str, torch.Tensor], decay: float) -> None:
        self.params, self.decay = params, decay
        with torch.no_grad():
            self.shadow = {k: p.detach().clone() for k, p in params.items()}

    def after_update(self, step: int) -> None:
        with torch.no_grad():
            for key, p in self.params.items():
                _local(self.shadow[key]).lerp_(_local(p.detach()), 1.0 - self.decay)

    @contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        with torch.no_grad():  # the trained weights wait on the host: no third copy on the GPU
            kept = {k: _local(p.detach()).to("cpu", copy=True) for k, p in self.params.items()}
            for key, p in self.params.items():
                _local(p.detach()).copy_(_local(self.shadow[key]))
        try:
            yield
        finally:
            with torch.no_grad():
                for key, p in self.params.items():
                    _local(p.detach()).copy_(kept[key])

    def tensors(self) -> dict[str, torch.Tensor]:
        return self.shadow


class LrWarmup(Callback):
    """Linear LR warm-up of every optimiser (``optim.warmup_steps`` = n): step s trains at
    ``lr * min(1, (s + 1) / n)``, through torch's ``LambdaLR`` (its state in checkpoints)."""

    name = "lr_warmup"
    field = K.optim.warmup_steps

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], steps: int) -> None:
        ramp = lambda step: min(1.0, (step + 1) / steps)  # noqa: E731
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, ramp) for o in optimizers]

    def after_update(self, step: int) -> None:
        for scheduler in self.schedulers:
            scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)


def training_callbacks(
    config: Config, generator: dict[str, torch.Tensor], optimizers: Sequence[torch.optim.Optimizer]
) -> list[Callback]:
    """The callbacks the config turns on (none by default): the LR warm-up, then the EMA (it
    averages the weights each step's update wrote)."""
    out: list[Callback] = []
    if config.optim.warmup_steps:
        out.append(LrWarmup(optimizers, config.optim.warmup_steps))
    if config.train.ema:
        out.append(GeneratorEma(generator, config.train.ema))
    return out
