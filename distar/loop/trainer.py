"""The world- and method-agnostic training loop: the step schedule, seeds, evaluation,
checkpoints and callbacks around one step of the method (:mod:`distar.method.di_star`).

Runs without Ray (``python -m distar.cli.train --help`` is its command line). Everything
experiment-specific comes from the world; reporting goes through :mod:`distar.runtime.callbacks`;
benchmark evaluation is handed in (:class:`BenchmarkRunner`) by the layer that builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from distar.config.benchmarks import WORLD_ITEMS
from distar.config.tree import Config, ConfigError
from distar.method.draws import Draws
from distar.method.steps import build_step
from distar.runtime.callbacks import Callback, training_callbacks
from distar.runtime.checkpoint import (
    load_checkpoint,
    load_sharded_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
    saved_callbacks,
    trained_state,
)
from distar.runtime.devices import resolve_device
from distar.runtime.distributed import (
    all_gather_objects,
    mean_across_ranks,
    rank,
    world_size,
)
from distar.runtime.sharding import ensure_process_group, gathered
from distar.runtime.step_parts import (
    FiniteGuard,
    check_noise_range,
    step_seed,
    to_floats,
)
from distar.runtime.timing import Stopwatch
from distar.worlds.base import EvalGenerator, World
from distar.worlds.builders import build_world

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise is fixed per run and never touches training RNG


class BenchmarkRunner(Protocol):
    """Scores a generator on the configured benchmarks (``eval.benchmarks``): each rank its
    ``shard`` of the prompts, ``gather`` bringing the shards to rank 0, which alone gets the
    results (``distar.evaluation.in_training.BenchmarkEvaluator``)."""

    def run(
        self,
        generator: EvalGenerator,
        shard: tuple[int, int],
        gather: Callable[[Any], list[Any]] | None,
    ) -> list: ...


class Trainer:
    """Holds the world, the method's step (with its optimisers), the step counter and the
    draws of one run. Under a ``torch.distributed`` process group every rank trains on its part
    of the step's global draw with averaged gradients; rank 0 alone writes plots and unsharded
    checkpoints.

    Every step reseeds ``draws`` (:class:`distar.method.draws.Draws`) from (seed, step) and runs
    one step of ``method`` (:func:`distar.method.steps.build_step`: DI*), which owns the
    optimisers.

    ``resources.strategy=fsdp``: the world shards its networks with FSDP2 (fp32 master shards,
    gathered in the compute dtype); evaluation gathers the generator first."""

    def __init__(
        self,
        config: Config,
        world: World | None = None,
        callbacks: Sequence[Callback] = (),
        benchmarks: BenchmarkRunner | None = None,
    ) -> None:
        if config.eval.benchmarks and benchmarks is None:
            raise ConfigError(
                f"eval.benchmarks: got {config.eval.benchmarks!r} but no benchmark runner; pass "
                "benchmarks=distar.evaluation.in_training.benchmark_evaluator(config)"
            )
        self.config = config
        self.device = resolve_device(config.train.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest convolutions
        torch.manual_seed(config.train.seed)
        self.stopwatch = Stopwatch()  # where the run's time goes (benchmarks/sweep_overhead.py)
        self.sharded = config.resources.strategy == "fsdp"
        with self.stopwatch.phase("world_build"):
            init = config.train.init
            self.world = world or build_world(config.world, self.device, init, self.sharded)
        check_noise_range(config.noise, self.world.sigma_range)
        self.rank = rank()
        if self.sharded:
            self._shard(config)
        self.draws = Draws(self.world, config.train.batch_size, self.rank, self.device)
        self.guard = FiniteGuard()
        self.method = build_step(config, self.world, self.draws, self.guard, self.sharded)
        optimizers = list(self.method.optimizers().values())
        chosen = training_callbacks(config, trained_state(self.world.generator), optimizers)
        self.callbacks = [*chosen, *callbacks]
        self.benchmarks = benchmarks
        self.step = 0
        self.out_dir = Path(config.train.out_dir)

    def _shard(self, config: Config) -> None:
        # offload on CPU saves nothing (the shards are on the host already) but runs the
        # offload code path of a GPU run: host gradients, host Adam, a CPU-capable group
        ensure_process_group(self.device, config.resources.cpu_offload)
        with self.stopwatch.phase("world_build"):
            self.world.shard(config.resources.cpu_offload)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One step of the method (DI*: K assistant rounds, then one generator step) on this
        step's seeded draws; advances ``self.step``. Returns device scalars: nothing here waits
        for the device."""
        self.draws.reseed(step_seed(self.config.train.seed, self.step))
        diagnose = (self.step + 1) % self.config.train.log_every == 0
        metrics = self.method.train_step(self.step, diagnose)
        self.step += 1
        for cb in self.callbacks:
            cb.after_update(self.step)
        return metrics

    # ---- evaluation, checkpoints, the loop ---------------------------------------------------
    def run_benchmarks(self) -> list:
        """The configured benchmarks (``eval.benchmarks``) on the current generator: prompts
        sharded across ranks, results on rank 0 (an empty list elsewhere)."""
        if self.benchmarks is None:
            return []
        shard = (self.rank, world_size())
        generator = self.world.eval_generator(self.config.eval.resolution)
        return self.benchmarks.run(generator, shard, all_gather_objects)

    def _notify(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every callback (timed: logging is part of a run's overhead)."""
        with self.stopwatch.phase("callbacks"):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

    def evaluate(self, final: bool = True) -> tuple[dict[str, float], dict[str, Path]]:
        """The world's metrics (every evaluation), its sample plot (the final one only: a plot
        costs more than the metrics on the embedded world), the configured benchmarks. A
        sharded generator is gathered first: then ranks may run different numbers of forwards
        (uneven benchmark shards, rank 0's plot)."""
        self.guard.check()
        with ExitStack() as weights:
            for cb in self.callbacks:  # before the gather: a callback's weights are shards too
                weights.enter_context(cb.evaluation_weights())
            with gathered(self.world.generator):
                return self._evaluate(final)

    def _evaluate(self, final: bool) -> tuple[dict[str, float], dict[str, Path]]:
        cfg = self.config
        seed = cfg.train.seed + EVAL_SEED_OFFSET
        with self.stopwatch.phase("evaluation"):
            metrics = self.world.evaluate(cfg.eval.samples_per_prompt, seed)
            items = None  # only rank 0 reports them (as it alone plots): no other rank computes
            if self.rank == 0:
                items = self.world.item_scores(cfg.eval.samples_per_prompt, seed)
            artifacts: dict[str, Path] = {}
            if cfg.eval.plot and final and self.rank == 0:
                path = self.out_dir / "plots" / f"samples_step{self.step:07d}.png"
                artifacts["samples"] = self.world.plot(
                    path, min(cfg.eval.samples_per_prompt, 1500), seed
                )
        if items is not None:  # first: an eval record means its items exist
            self._notify("on_items", self.step, WORLD_ITEMS, items)
        self._notify("on_eval", self.step, metrics, artifacts)
        with self.stopwatch.phase("evaluation"):
            results = self.run_benchmarks()
        if results:
            self._notify("on_benchmarks", self.step, results)
        return metrics, artifacts

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.world.generator, "assistant": self.world.assistant}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.method.optimizers()

    def _stateful(self) -> list[Callback]:
        """The callbacks a checkpoint holds (those with a ``name``)."""
        return [cb for cb in self.callbacks if cb.name]

    def _callback_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """The callbacks' weights (the EMA's), written and sharded as the networks' are."""
        return {cb.name: tensors for cb in self._stateful() if (tensors := cb.tensors())}

    def save(self) -> Path | None:
        """A full-state checkpoint: written by rank 0 alone (other ranks return None), or, with
        sharded networks, by every rank (its shards, DCP) and returned on every rank."""
        self.guard.check()
        self._notify("before_checkpoint", self.step)
        state = {
            "torch_rng": torch.get_rng_state(),
            "callbacks": {cb.name: cb.state_dict() for cb in self._stateful()},
        }
        tensors, root = self._callback_tensors(), self.out_dir / "checkpoints"
        if self.sharded:
            with self.stopwatch.phase("checkpoint"):
                path = save_sharded_checkpoint(
                    root, self.step, self.modules(), self.optimizers(), state, self.config, tensors
                )
            self._notify("on_checkpoint", self.step, path)
            return path
        if self.rank != 0:
            return None
        state.update({f"opt_{k}": opt.state_dict() for k, opt in self.optimizers().items()})
        with self.stopwatch.phase("checkpoint"):
            path = save_checkpoint(root, self.step, self.modules(), state, self.config, tensors)
        self._notify("on_checkpoint", self.step, path)
        return path

    def resume(self, path: Path, fallback: bool = False) -> None:
        """Continue from a checkpoint; ``fallback``: from the newest readable one if it is
        corrupt (unsharded checkpoints). A callback the config turns on that the checkpoint was
        written without is refused, naming its field."""
        saved = saved_callbacks(path)
        missing = [cb for cb in self._stateful() if saved is not None and cb.name not in saved]
        if missing:
            raise ConfigError(
                f"{missing[0].field}: on, but checkpoint {path} was written without it; resume "
                "with the config it was written with (--resume takes it), or start a new run"
            )
        tensors = self._callback_tensors()
        if self.sharded:
            state = load_sharded_checkpoint(path, self.modules(), self.optimizers(), tensors)
        else:
            state = load_checkpoint(path, self.modules(), fallback, tensors)
            for key, opt in self.optimizers().items():
                opt.load_state_dict(state[f"opt_{key}"])
        for cb in self._stateful():
            cb.load_state_dict(state["callbacks"][cb.name])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0 and self.step < self.config.train.steps

    def train(self) -> dict[str, float]:
        """Run to ``train.steps``; evaluate and checkpoint on schedule and at the end."""
        cfg = self.config.train
        self._notify("on_train_start", self.step, cfg.steps)
        while self.step < cfg.steps:
            with self.stopwatch.phase("steps"):
                metrics = self.train_step()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                metrics = to_floats(mean_across_ranks(metrics))
                metrics = {f"train/{k}": v for k, v in metrics.items()}
                self.guard.check(metrics)
                self._notify("on_step", self.step, metrics)
            if self._due(cfg.eval_every):
                self.evaluate(final=False)
            if self._due(cfg.checkpoint_every):
                self.save()
        self.save()  # first: a crash in the final evaluation must not lose the run
        final, _ = self.evaluate()
        self._notify("on_train_end", self.step, final)
        return final
