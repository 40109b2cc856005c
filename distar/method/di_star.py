"""The DI* method's step (Algorithm 1 of the paper): K rounds of the assistant's denoising loss
on stop-gradient generator samples, then one generator update on the DI* loss with the
assistant frozen but differentiable in its input. The loop (:mod:`distar.loop.trainer`) owns
the schedule, the seeds, evaluation and checkpoints; this class owns the networks' optimisers
and what one step does with them, so a new step shape is a new class here, not a new loop.

The losses are :mod:`distar.method.losses`; every draw comes from :class:`Draws`."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from distar.config.tree import Config
from distar.method.contract import TrainingWorld
from distar.method.draws import Draws
from distar.method.losses import GeneratorBatch, Networks, assistant_loss, generator_loss
from distar.method.sigmas import ASSISTANT_WEIGHTINGS
from distar.runtime.sharding import gathered
from distar.runtime.step_parts import FiniteGuard, clip_and_step, frozen, make_adam, trainable


class DIStar:
    """DI*'s two updates on ``world``'s generator and assistant, with one Adam each over the
    parameters that require grad when this is built (after any sharding: the shards)."""

    def __init__(
        self,
        config: Config,
        world: TrainingWorld,
        draws: Draws,
        guard: FiniteGuard,
        sharded: bool,
    ) -> None:
        self.config, self.world, self.draws, self.guard = config, world, draws, guard
        self.sharded = sharded
        self.params = {
            "generator": trainable(world.generator),
            "assistant": trainable(world.assistant),
        }
        self.opt_generator = make_adam(self.params["generator"], config.optim.generator)
        self.opt_assistant = make_adam(self.params["assistant"], config.optim.assistant)
        self.samples: tuple[torch.Tensor, Any] | None = None  # the generator step's, detached

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_generator, "assistant": self.opt_assistant}

    def networks(self) -> Networks:
        w = self.world
        return Networks(w.reference, w.assistant, w.reward, w.reference_pair)

    def train_step(self, step: int, diagnose: bool) -> dict[str, torch.Tensor]:
        """K assistant rounds and one generator step, in the configured order; device scalars
        (nothing here waits for the device)."""
        optim = self.config.optim
        if optim.reuse_generator_samples:  # DMD2's order: the generator's samples serve twice
            metrics = self.generator_update(step, diagnose)
            reused = [self.assistant_update(step, self.samples)]
            rest = [self.assistant_update(step) for _ in range(optim.assistant_rounds - 1)]
            a_losses = reused + rest
        else:
            a_losses = [self.assistant_update(step) for _ in range(optim.assistant_rounds)]
            metrics = self.generator_update(step, diagnose)
        self.samples = None
        metrics["loss/assistant"] = torch.stack(a_losses).mean()
        return metrics

    def assistant_update(
        self, step: int, samples: tuple[torch.Tensor, Any] | None = None
    ) -> torch.Tensor:
        """One round of the assistant's denoising loss on stop-gradient generator samples:
        ``samples`` (x0, conditions) when given (the generator step's own), else fresh ones."""
        world, cfg, draws = self.world, self.config, self.draws
        if samples is None:
            z, cond = draws.batch()
            with torch.no_grad():
                x0 = world.generator(z, cond)
        else:
            x0, cond = samples
        sigma = draws.sigma(cfg.noise.assistant)
        noise = draws.noise(x0)
        weight = ASSISTANT_WEIGHTINGS.get(cfg.noise.assistant_weighting)(sigma, world.sigma_data)
        loss = assistant_loss(world.assistant, x0, sigma, noise, cond, weight).mean()
        self.guard.watch(step, "assistant loss", loss)
        self.opt_assistant.zero_grad(set_to_none=True)
        loss.backward()
        norm = clip_and_step(
            self.params["assistant"], self.opt_assistant, cfg.optim.assistant, self.sharded
        )
        self.guard.watch(step, "assistant gradient norm", norm)
        return loss.detach()

    def generator_update(self, step: int, diagnose: bool = False) -> dict[str, torch.Tensor]:
        """One DI* generator step with the assistant frozen (but differentiable in its input).

        With ``train.generator_chunk = k`` the loss and its backward run k samples at a time
        onto a detached copy of x0, and one backward through the generator follows: the same
        gradient (every term is a per-sample sum), with the memory of k samples."""
        world, cfg, draws = self.world, self.config, self.draws
        z, cond = draws.batch()
        n = len(z)
        sigma = draws.sigma(cfg.noise.generator)
        x0 = world.generator(z, cond)
        noise = draws.noise(x0)
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
        self.guard.watch(step, "generator loss", metrics["loss/generator"])
        norm = clip_and_step(
            self.params["generator"], self.opt_generator, cfg.optim.generator, self.sharded
        )
        self.guard.watch(step, "generator gradient norm", norm)
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
                batch.x0[part],
                batch.sigma[part],
                batch.noise[part],
                batch.cond[part],
                batch.null[part],
            )
            out = generator_loss(self.config.loss, part_batch, self.networks(), diagnose)
            (out.per_sample.sum() / n).backward()
            k = part.stop - part.start
            values = {"loss/generator": out.per_sample.detach().sum()}
            values.update({f"loss/{t}": v.detach().sum() for t, v in out.terms.items()})
            values.update({d: k * torch.as_tensor(v) for d, v in out.diagnostics.items()})
            for key, v in values.items():
                sums[key] = sums.get(key, 0) + v
        return sums
