"""The world-agnostic DI* training loop: K assistant rounds, then one generator step.

Runs without Ray: ``python -m distar.train --help``. Everything experiment-specific comes from
the world; reporting goes through :mod:`distar.callbacks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distar.callbacks import Callback
from distar.checkpoint import load_checkpoint, save_checkpoint
from distar.config import AdamConfig, Config
from distar.distributed import average_gradients, broadcast_parameters, rank
from distar.losses import assistant_loss, generator_loss
from distar.sigmas import ASSISTANT_WEIGHTINGS, sample_sigma
from distar.worlds import World, build_world

EVAL_SEED_OFFSET = 1_000_003  # evaluation noise is fixed per run and never touches training RNG


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the run stops instead of training on garbage."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but torch sees no CUDA device")
    return torch.device(name)


def make_adam(module: nn.Module, cfg: AdamConfig) -> torch.optim.Adam:
    return torch.optim.Adam(
        module.parameters(),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


def check_finite(step: int, what: str, value: torch.Tensor, detail: dict[str, Any] | None = None):
    if not torch.isfinite(value).all():
        raise NonFiniteLossError(
            f"step {step}: {what} is {value.item()} (non-finite); stopping. Details: {detail or {}}"
        )


def clip_and_step(
    module: nn.Module, opt: torch.optim.Optimizer, cfg: AdamConfig, step: int, what: str
) -> float:
    """Average gradients across ranks, optionally clip, refuse non-finite gradients, step;
    returns the pre-clip gradient norm."""
    average_gradients(module)
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    check_finite(step, f"{what} gradient norm", norm)
    opt.step()
    return norm.item()


def step_seed(seed: int, rank: int, step: int) -> int:
    """Training randomness is a pure function of (seed, rank, step): resuming at any step, on any
    number of ranks, replays exactly the draws an uninterrupted run makes, and ranks differ."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) % (2**63 - 1)


class Trainer:
    """Holds the world, optimisers, step counter and training RNG of one run. Under a
    ``torch.distributed`` process group every rank trains on its own draws with averaged
    gradients; only rank 0 writes plots and checkpoints."""

    def __init__(
        self, config: Config, world: World | None = None, callbacks: Sequence[Callback] = ()
    ) -> None:
        self.config = config
        self.device = resolve_device(config.train.device)
        torch.manual_seed(config.train.seed)
        self.world = world or build_world(config.world, self.device, config.train.init)
        self.rank = rank()
        broadcast_parameters(self.world.generator)
        broadcast_parameters(self.world.assistant)
        self.rng = torch.Generator()
        self.opt_generator = make_adam(self.world.generator, config.optim.generator)
        self.opt_assistant = make_adam(self.world.assistant, config.optim.assistant)
        self.callbacks = list(callbacks)
        self.step = 0
        self.out_dir = Path(config.train.out_dir)

    # ---- one update of each network --------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.train.batch_size
        return self.world.sample_latents(n, self.rng), self.world.sample_prompts(n, self.rng)

    def assistant_update(self) -> float:
        """One round of the assistant's denoising loss on stop-gradient generator samples."""
        world, cfg = self.world, self.config
        z, cond = self._batch()
        with torch.no_grad():
            x0 = world.generator(z, cond)
        sigma = sample_sigma(cfg.noise.assistant, len(z), self.rng).to(self.device)
        noise = torch.randn(x0.shape, generator=self.rng).to(self.device)
        weight = ASSISTANT_WEIGHTINGS.get(cfg.noise.assistant_weighting)(sigma, world.sigma_data)
        loss = assistant_loss(world.assistant, x0, sigma, noise, cond, weight).mean()
        check_finite(self.step, "assistant loss", loss.detach())
        self.opt_assistant.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(
            world.assistant, self.opt_assistant, cfg.optim.assistant, self.step, "assistant"
        )
        return loss.item()

    def generator_update(self, diagnose: bool = False) -> dict[str, float]:
        """One DI* generator step with the assistant frozen (but differentiable in its input)."""
        world, cfg = self.world, self.config
        z, cond = self._batch()
        sigma = sample_sigma(cfg.noise.generator, len(z), self.rng).to(self.device)
        x0 = world.generator(z, cond)
        noise = torch.randn(x0.shape, generator=self.rng).to(self.device)
        null = torch.full_like(cond, world.null_cond)
        world.assistant.requires_grad_(False)
        try:
            out = generator_loss(
                cfg.loss,
                x0,
                sigma,
                noise,
                cond,
                null,
                world.reference,
                world.assistant,
                world.reward,
                diagnose,
            )
            loss = out.per_sample.mean()
            terms = {f"loss/{k}": v.detach().mean().item() for k, v in out.terms.items()}
            check_finite(self.step, "generator loss", loss.detach(), terms)
            self.opt_generator.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            world.assistant.requires_grad_(True)
        grad_norm = clip_and_step(
            world.generator, self.opt_generator, cfg.optim.generator, self.step, "generator"
        )
        return {
            "loss/generator": loss.item(),
            **terms,
            **out.diagnostics,
            "grad_norm/generator": grad_norm,
        }

    def train_step(self) -> dict[str, float]:
        """K assistant rounds, then one generator step; advances ``self.step``."""
        self.rng.manual_seed(step_seed(self.config.train.seed, self.rank, self.step))
        a_losses = [self.assistant_update() for _ in range(self.config.optim.assistant_rounds)]
        diagnose = (self.step + 1) % self.config.train.log_every == 0
        metrics = self.generator_update(diagnose)
        metrics["loss/assistant"] = sum(a_losses) / len(a_losses)
        self.step += 1
        return metrics

    # ---- evaluation, checkpoints, the loop ---------------------------------------------------
    def evaluate(self) -> tuple[dict[str, float], dict[str, Path]]:
        cfg = self.config
        seed = cfg.train.seed + EVAL_SEED_OFFSET
        metrics = self.world.evaluate(cfg.eval.samples_per_prompt, seed)
        artifacts: dict[str, Path] = {}
        if cfg.eval.plot and self.rank == 0:
            path = self.out_dir / "plots" / f"samples_step{self.step:07d}.png"
            artifacts["samples"] = self.world.plot(
                path, min(cfg.eval.samples_per_prompt, 1500), seed
            )
        for cb in self.callbacks:
            cb.on_eval(self.step, metrics, artifacts)
        return metrics, artifacts

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.world.generator, "assistant": self.world.assistant}

    def save(self) -> Path | None:
        """Rank 0 writes a full-state checkpoint; other ranks write nothing and return None."""
        if self.rank != 0:
            return None
        state = {
            "opt_generator": self.opt_generator.state_dict(),
            "opt_assistant": self.opt_assistant.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        path = save_checkpoint(
            self.out_dir / "checkpoints", self.step, self.modules(), state, self.config
        )
        for cb in self.callbacks:
            cb.on_checkpoint(self.step, path)
        return path

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path, self.modules())
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_assistant.load_state_dict(state["opt_assistant"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    def _due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0 and self.step < self.config.train.steps

    def train(self) -> dict[str, float]:
        """Run to ``train.steps``; evaluate and checkpoint on schedule and at the end."""
        cfg = self.config.train
        for cb in self.callbacks:
            cb.on_train_start(self.step, cfg.steps)
        while self.step < cfg.steps:
            metrics = self.train_step()
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                for cb in self.callbacks:
                    cb.on_step(self.step, metrics)
            if self._due(cfg.eval_every):
                self.evaluate()
            if self._due(cfg.checkpoint_every):
                self.save()
        final, _ = self.evaluate()
        self.save()
        for cb in self.callbacks:
            cb.on_train_end(self.step, final)
        return final


if __name__ == "__main__":
    from distar.cli import main

    raise SystemExit(main())
