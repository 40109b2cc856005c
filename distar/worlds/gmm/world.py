"""The embedded world ("gmm"): a conditional Gaussian mixture with an exact reference denoiser,
an MLP one-step generator, an EDM-preconditioned MLP assistant, hackable rewards and exact metrics.
Runs the whole DI* algorithm on a laptop CPU in minutes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from distar.config.gmm import GMMWorldConfig
from distar.runtime.devices import to_device
from distar.runtime.distributed import broadcast_networks
from distar.runtime.sharding import shard_network
from distar.worlds.base import WORLDS
from distar.worlds.gmm.eval import GMMGenerator
from distar.worlds.gmm.metrics import EvalSet, evaluate_samples, item_rows
from distar.worlds.gmm.mixture import ConditionalGMM, build_mixture
from distar.worlds.gmm.nets import EDMDenoiser, OneStepGenerator, ResidualDenoiser
from distar.worlds.gmm.rewards import GMM_REWARDS
from distar.worlds.gmm.stage0 import load_or_fit


def reference_sigma_data(mixture: ConditionalGMM) -> float:
    """Per-coordinate std of the null-prompt reference: EDM's sigma_data."""
    _, cov = mixture.moments(mixture.null)
    return math.sqrt(torch.trace(cov).item() / mixture.dim)


class GMMWorld:
    placed = True  # small MLPs: on the device from the start

    def __init__(
        self,
        cfg: GMMWorldConfig,
        device: torch.device,
        init: str = "stage0",
        sharded: bool = False,
    ) -> None:
        self.config, self.device = cfg, device
        self.mixture = build_mixture(cfg).to(device)
        self.null_cond = self.mixture.null
        self.sigma_data = reference_sigma_data(self.mixture)
        self.sigma_range = (0.0, math.inf)  # the mixture's denoiser is exact at every sigma
        n_conds = self.mixture.null + 1
        self.generator = OneStepGenerator(cfg.dim, n_conds, cfg.generator_width, cfg.depth)
        if cfg.assistant_init == "copy":
            self.assistant = ResidualDenoiser(
                self.reference, cfg.dim, n_conds, self.sigma_data, cfg.assistant_width, cfg.depth
            )
        else:
            self.assistant = EDMDenoiser(
                cfg.dim, n_conds, self.sigma_data, cfg.assistant_width, cfg.depth
            )
        self.generator.to(device)
        self.assistant.to(device)
        fresh = OneStepGenerator(cfg.dim, n_conds, cfg.generator_width, cfg.depth).to(device)
        fitted = self.generator if init == "stage0" else fresh
        self.stage0_path = load_or_fit(cfg, self.mixture, fitted, self.assistant)
        self._reward = GMM_REWARDS.get(cfg.reward)(self.mixture, cfg.reward_sharpness)
        broadcast_networks([self.generator, self.assistant])  # the world contract: placed

    def reference(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        return self.mixture.denoise(x, sigma, cond)

    def reference_pair(
        self, x: Tensor, sigma: Tensor, cond: Tensor, null: Tensor
    ) -> tuple[Tensor, Tensor]:
        both = self.mixture.denoise(
            torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, null])
        )
        return both[: len(x)], both[len(x) :]

    def reward(self, x0: Tensor, cond: Tensor) -> Tensor:
        return self._reward(x0, cond)

    def sample_conditions(self, n: int, rng: torch.Generator, keep: slice | None = None) -> Tensor:
        drawn = torch.randint(0, self.mixture.n_prompts, (n,), generator=rng)
        return to_device(drawn if keep is None else drawn[keep], self.device)

    def frozen_networks(self) -> list[nn.Module]:
        return []  # the exact reference has no weights

    def shard(self, offload: bool) -> None:
        """FSDP2 on each small MLP as a whole (no blocks); the exact reference has no weights."""
        for net in (self.generator, self.assistant):
            shard_network(net, [], self.device, torch.float32, trained=True, offload=offload)

    def null_conditions(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, self.null_cond)

    def sample_latents(self, n: int, rng: torch.Generator) -> Tensor:
        return torch.randn(n, self.config.dim, generator=rng, device=rng.device)

    def eval_prompts(self, n_per_prompt: int) -> Tensor:
        return torch.arange(self.mixture.n_prompts, device=self.device).repeat_interleave(
            n_per_prompt
        )

    @torch.no_grad()
    def generate(self, cond: Tensor, seed: int) -> Tensor:
        rng = torch.Generator().manual_seed(seed)
        z = torch.randn(len(cond), self.config.dim, generator=rng).to(self.device)
        return self.generator(z, cond)

    def eval_set(self, samples: Tensor, cond: Tensor, seed: int) -> EvalSet:
        reference = self.mixture.sample(cond, torch.Generator().manual_seed(seed + 1))
        return EvalSet(samples, cond, reference, self.mixture, self.reward)

    def evaluate(self, samples_per_prompt: int, seed: int) -> dict[str, float]:
        """Exact metrics of the current generator on ``samples_per_prompt`` samples of every
        prompt."""
        cond = self.eval_prompts(samples_per_prompt)
        return evaluate_samples(self.eval_set(self.generate(cond, seed), cond, seed))

    def item_scores(self, samples_per_prompt: int, seed: int) -> pd.DataFrame:
        """:meth:`evaluate`'s per-sample values (the same samples), one row per sample keyed
        so that two runs evaluated at ``seed`` pair sample by sample."""
        cond = self.eval_prompts(samples_per_prompt)
        return item_rows(self.eval_set(self.generate(cond, seed), cond, seed), seed)

    def evaluate_reference(self, n_per_prompt: int, seed: int) -> dict[str, float]:
        """The same metrics on exact reference samples: the best achievable fidelity."""
        cond = self.eval_prompts(n_per_prompt)
        samples = self.mixture.sample(cond, torch.Generator().manual_seed(seed + 2))
        return evaluate_samples(self.eval_set(samples, cond, seed))

    def plot(self, path: Path, samples_per_prompt: int, seed: int) -> Path:
        from distar.worlds.gmm.plot import plot_samples  # matplotlib only when plotting

        cond = self.eval_prompts(samples_per_prompt)
        return plot_samples(self.mixture, self.generate(cond, seed), cond, Path(path))

    def eval_generator(self, resolution: int = 0) -> GMMGenerator:
        """``(prompts "prompt <i>", noise) -> points`` (``resolution`` has no meaning here)."""
        return GMMGenerator(self)


WORLDS.add("gmm", GMMWorld)
