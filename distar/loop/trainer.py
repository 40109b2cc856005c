"""The world-agnostic DI* training loop: K assistant rounds, then one generator step.

Runs without Ray (``python -m distar.cli.train --help`` is its command line). Everything
experiment-specific comes from the world; reporting goes through :mod:`distar.runtime.callbacks`;
benchmark evaluation is handed in (:class:`BenchmarkRunner`) by the layer that builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from distar.config.benchmarks import WORLD_UNITS
from distar.config.tree import Config, ConfigError
from distar.method.losses import GeneratorBatch, Networks, assistant_loss, generator_loss
from distar.method.sigmas import ASSISTANT_WEIGHTINGS, sample_sigma
from distar.runtime.callbacks import Callback
from distar.runtime.checkpoint import (
    load_checkpoint,
    load_sharded_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from distar.runtime.devices import resolve_device
from distar.runtime.distributed import (
    all_gather_objects,
    broadcast_parameters,
    mean_across_ranks,
    rank,
    world_size,
)
from distar.runtime.sharding import ensure_process_group, gathered
from distar.runtime.step_parts import (  # noqa: F401  (re-exported: the loop's API)
    FiniteGuard,
    NonFiniteLossError,
    check_noise_range,
    clip_and_step,
    frozen,
    make_adam,
    step_seed,
    to_floats,
    trainable,
)
from distar.runtime.timing import Stopwatch
from distar.worlds.base import EvalGenerator, World
from distar.worlds.builders import build_world

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise is fixed per run and never touches training RNG
NOISE_STREAM = 0x5EED  # separates the device generator's stream from the host one's


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
    """Holds the world, optimisers, step counter and training RNG of one run. Under a
    ``torch.distributed`` process group every rank trains on its part of the step's global
    draw with averaged gradients; rank 0 alone writes plots and unsharded checkpoints.

    Two generators per step, both seeded from (seed, step): ``rng`` on the host for what the
    world draws on the host (prompts), ``noise_rng`` on the training device for latents, sigmas
    and noise, so a step makes no host-to-device copy of random numbers. Each draw is of the
    global batch (``train.batch_size`` x ranks), of which a rank keeps its ``part``.

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
        with self.stopwatch.phase("world_build"):
            self.world = world or build_world(config.world, self.device, config.train.init)
        check_noise_range(config.noise, self.world.sigma_range)
        self.rank = rank()
        n = config.train.batch_size
        self.part = slice(self.rank * n, (self.rank + 1) * n)
        broadcast_parameters(trainable(self.world.generator))
        broadcast_parameters(trainable(self.world.assistant))
        self.sharded = config.resources.strategy == "fsdp"
        if self.sharded:
            self._shard(config)
        self.params = {  # after sharding, which replaces every parameter by its shard
            "generator": trainable(self.world.generator),
            "assistant": trainable(self.world.assistant),
        }
        self.rng = torch.Generator()
        self.noise_rng = torch.Generator(device=self.device)
        self.opt_generator = make_adam(self.params["generator"], config.optim.generator)
        self.opt_assistant = make_adam(self.params["assistant"], config.optim.assistant)
        self.callbacks = list(callbacks)
        self.guard = FiniteGuard()
        self.benchmarks = benchmarks
        self.step = 0
        self.samples: tuple[torch.Tensor, Any] | None = None  # the generator step's, detached
        self.out_dir = Path(config.train.out_dir)

    def _shard(self, config: Config) -> None:
        # offload on CPU saves nothing (the shards are on the host already) but runs the
        # offload code path of a GPU run: host gradients, host Adam, a CPU-capable group
        ensure_process_group(self.device, config.resources.cpu_offload)
        with self.stopwatch.phase("world_build"):
            self.world.shard(config.resources.cpu_offload)

    # ---- one update of each network --------------------------------------------------------
    def _draw(self, draw, *args: Any) -> torch.Tensor:
        """This rank's part of a draw of the global batch: ``draw(total, *args)``."""
        total = self.config.train.batch_size * world_size()
        return draw(total, *args)[self.part]

    def _batch(self) -> tuple[torch.Tensor, Any]:
        total = self.config.train.batch_size * world_size()
        return (
            self._draw(self.world.sample_latents, self.noise_rng),
            self.world.sample_conditions(total, self.rng, self.part),
        )

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        def draw(total: int) -> torch.Tensor:
            shape = (total, *like.shape[1:])
            return torch.randn(shape, generator=self.noise_rng, device=self.device)

        return self._draw(draw)

    def _sigma(self, schedule) -> torch.Tensor:
        return self._draw(lambda total: sample_sigma(schedule, total, self.noise_rng))

    def assistant_update(self, samples: tuple[torch.Tensor, Any] | None = None) -> torch.Tensor:
        """One round of the assistant's denoising loss on stop-gradient generator samples:
        ``samples`` (x0, conditions) when given (the generator step's own), else fresh ones."""
        world, cfg = self.world, self.config
        if samples is None:
            z, cond = self._batch()
            with torch.no_grad():
                x0 = world.generator(z, cond)
        else:
            x0, cond = samples
        sigma = self._sigma(cfg.noise.assistant)
        noise = self._noise(x0)
        weight = ASSISTANT_WEIGHTINGS.get(cfg.noise.assistant_weighting)(sigma, world.sigma_data)
        loss = assistant_loss(world.assistant, x0, sigma, noise, cond, weight).mean()
        self.guard.watch(self.step, "assistant loss", loss)
        self.opt_assistant.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_and_step(
            self.params["assistant"], self.opt_assistant, cfg.optim.assistant, self.sharded
        )
        self.guard.watch(self.step, "assistant gradient norm", norm)
        return loss.detach()

    def networks(self) -> Networks:
        w = self.world
        return Networks(w.reference, w.assistant, w.reward, w.reference_pair)

    def generator_update(self, diagnose: bool = False) -> dict[str, torch.Tensor]:
        """One DI* generator step with the assistant frozen (but differentiable in its input).

        With ``train.generator_chunk = k`` the loss and its backward run k samples at a time
        onto a detached copy of x0, and one backward through the generator follows: the same
        gradient (every term is a per-sample sum), with the memory of k samples."""
        world, cfg = self.world, self.config
        z, cond = self._batch()
        n = len(z)
        sigma = self._sigma(cfg.noise.generator)
        x0 = world.generator(z, cond)
        noise = self._noise(x0)
        null = world.null_conditions(cond)
        chunk = cfg.train.generator_chunk or n
        with frozen(self.params["assistant"]):
            leaf = x0 if chunk >= n else x0.detach().requires_grad_(True)
            self.opt_generator.zero_grad(set_to_none=True)
            # chunked, the frozen reference is gathered once for every chunk's forward and
            # backward, and let go before the generator's backward (one chunk holds it whole
            # from its forward to its backward anyway); unchunked, FSDP's own order is that
            held = gathered(*world.frozen_networks()) if leaf is not x0 else nullcontext()
            with held:
                sums = self._generator_chunks(
                    GeneratorBatch(leaf, sigma, noise, cond, null), chunk, diagnose
                )
            if leaf is not x0:
                x0.backward(leaf.grad)
        self.samples = (x0.detach(), cond)  # for optim.reuse_generator_samples
        metrics = {key: v / n for key, v in sums.items()}
        self.guard.watch(self.step, "generator loss", metrics["loss/generator"])
        norm = clip_and_step(
            self.params["generator"], self.opt_generator, cfg.optim.generator, self.sharded
        )
        self.guard.watch(self.step, "generator gradient norm", norm)
        return {**metrics, "grad_norm/generator": norm.detach()}

    def _generator_chunks(
        self, batch: GeneratorBatch, chunk: int, diagnose: bool
    ) -> dict[str, torch.Tensor]:
        """The generator loss and its backward, ``chunk`` samples at a time; the sums of the
        logged values over the batch."""
        n = len(batch.x0)
        sums: dict[str, torch.Tensor] = {}
        for i in range(0, n, chunk):
            part = slice(i, min(i + chunk, n))
            part_batch = GeneratorBatch(
                batch.x0[part], batch.sigma[part], batch.noise[part], batch.cond[part],
                batch.null[part],
            )  # fmt: skip
            out = generator_loss(self.config.loss, part_batch, self.networks(), diagnose)
            (out.per_sample.sum() / n).backward()
            k = part.stop - part.start
            values = {"loss/generator": out.per_sample.detach().sum()}
            values.update({f"loss/{t}": v.detach().sum() for t, v in out.terms.items()})
            values.update({d: k * torch.as_tensor(v) for d, v in out.diagnostics.items()})
            for key, v in values.items():
                sums[key] = sums.get(key, 0) + v
        return sums

    def train_step(self) -> dict[str, torch.Tensor]:
        """K assistant rounds, then one generator step; advances ``self.step``. Returns device
        scalars: nothing here waits for the device."""
        seed = step_seed(self.config.train.seed, self.step)
        self.rng.manual_seed(seed)
        self.noise_rng.manual_seed(seed ^ NOISE_STREAM)
        optim = self.config.optim
        diagnose = (self.step + 1) % self.config.train.log_every == 0
        if optim.reuse_generator_samples:  # DMD2's order: the generator's samples serve twice
            metrics = self.generator_update(diagnose)
            reused = [self.assistant_update(self.samples)]
            rest = [self.assistant_update() for _ in range(optim.assistant_rounds - 1)]
            a_losses = reused + rest
        else:
            a_losses = [self.assistant_update() for _ in range(optim.assistant_rounds)]
            metrics = self.generator_update(diagnose)
        self.samples = None
        metrics["loss/assistant"] = torch.stack(a_losses).mean()
        self.step += 1
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
        with gathered(self.world.generator):
            return self._evaluate(final)

    def _evaluate(self, final: bool) -> tuple[dict[str, float], dict[str, Path]]:
        cfg = self.config
        seed = cfg.train.seed + EVAL_SEED_OFFSET
        with self.stopwatch.phase("evaluation"):
            metrics = self.world.evaluate(cfg.eval.samples_per_prompt, seed)
            units = None  # only rank 0 reports them (as it alone plots): no other rank computes
            if self.rank == 0:
                units = self.world.unit_scores(cfg.eval.samples_per_prompt, seed)
            artifacts: dict[str, Path] = {}
            if cfg.eval.plot and final and self.rank == 0:
                path = self.out_dir / "plots" / f"samples_step{self.step:07d}.png"
                artifacts["samples"] = self.world.plot(
                    path, min(cfg.eval.samples_per_prompt, 1500), seed
                )
        if units is not None:  # first: an eval record means its units exist
            self._notify("on_units", self.step, WORLD_UNITS, units)
        self._notify("on_eval", self.step, metrics, artifacts)
        with self.stopwatch.phase("evaluation"):
            results = self.run_benchmarks()
        if results:
            self._notify("on_benchmarks", self.step, results)
        return metrics, artifacts

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.world.generator, "assistant": self.world.assistant}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_generator, "assistant": self.opt_assistant}

    def save(self) -> Path | None:
        """A full-state checkpoint: written by rank 0 alone (other ranks return None), or, with
        sharded networks, by every rank (its shards, DCP) and returned on every rank."""
        self.guard.check()
        if self.sharded:
            with self.stopwatch.phase("checkpoint"):
                path = save_sharded_checkpoint(
                    self.out_dir / "checkpoints",
                    self.step,
                    self.modules(),
                    self.optimizers(),
                    {"torch_rng": torch.get_rng_state()},
                    self.config,
                )
            self._notify("on_checkpoint", self.step, path)
            return path
        if self.rank != 0:
            return None
        state = {
            "opt_generator": self.opt_generator.state_dict(),
            "opt_assistant": self.opt_assistant.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        with self.stopwatch.phase("checkpoint"):
            path = save_checkpoint(
                self.out_dir / "checkpoints", self.step, self.modules(), state, self.config
            )
        self._notify("on_checkpoint", self.step, path)
        return path

    def resume(self, path: Path, fallback: bool = False) -> None:
        """Continue from a checkpoint; ``fallback``: from the newest readable one if it is
        corrupt (unsharded checkpoints)."""
        if self.sharded:
            state = load_sharded_checkpoint(path, self.modules(), self.optimizers())
        else:
            state = load_checkpoint(path, self.modules(), fallback)
            self.opt_generator.load_state_dict(state["opt_generator"])
            self.opt_assistant.load_state_dict(state["opt_assistant"])
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
