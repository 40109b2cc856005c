"""The embedded world behind the evaluation harness' interfaces: its prompts as a PromptSet, its
generator as ``(prompts, noise) -> samples``, its exact metrics as sample / set metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distar.data.prompts import Prompt, PromptSet
from distar.worlds.gmm.metrics import evaluate_samples

SET_METRICS = ("precision", "coverage", "adherence", "mmd", "frechet")


def prompt_text(index: int) -> str:
    return f"prompt {index}"


def prompt_set(world) -> PromptSet:
    n = world.mixture.n_prompts
    return PromptSet("gmm", tuple(Prompt(prompt_text(i), prompt_text(i), i) for i in range(n)))


def conditions(world, prompts: Sequence[str]) -> Tensor:
    lookup = {prompt_text(i): i for i in range(world.mixture.n_prompts)}
    unknown = sorted(set(prompts) - set(lookup))
    if unknown:
        raise KeyError(f"gmm world: unknown prompts {unknown[:3]}; known: {sorted(lookup)}")
    return torch.tensor([lookup[p] for p in prompts], device=world.device)


class GMMGenerator:
    def __init__(self, world) -> None:
        self.world = world
        self.noise_shape = (world.config.dim,)

    def __call__(self, prompts: Sequence[str], noise: Tensor) -> Tensor:
        return self.world.generator(noise.to(self.world.device), conditions(self.world, prompts))


class GMMReward:
    name = "reward"

    def __init__(self, world) -> None:
        self.world = world

    def score(self, x: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.world.reward(x, conditions(self.world, prompts))


class GMMLogLik:
    """Exact ``log p_ref(x | c)``."""

    name = "loglik"

    def __init__(self, world) -> None:
        self.world = world

    def score(self, x: Tensor, prompts: Sequence[str]) -> Tensor:
        zero = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        return self.world.mixture.log_prob(x, zero, conditions(self.world, prompts))


class GMMExactSetMetrics:
    """Precision, coverage, adherence, MMD, Fréchet of all samples vs exact reference samples."""

    name = "exact"

    def __init__(self, world, seed: int = 0) -> None:
        self.world, self.seed = world, seed
        self.reset()

    def reset(self) -> None:
        self.samples: list[Tensor] = []
        self.conds: list[Tensor] = []

    def update(self, x: Tensor, prompts: Sequence[str]) -> None:
        self.samples.append(x.detach())
        self.conds.append(conditions(self.world, prompts))

    def compute(self) -> dict[str, float]:
        x, cond = torch.cat(self.samples), torch.cat(self.conds)
        return evaluate_samples(self.world.eval_set(x, cond, self.seed), SET_METRICS)


def gmm_metrics(world, seed: int = 0) -> dict:
    return {
        "reward": GMMReward(world),
        "loglik": GMMLogLik(world),
        "exact": GMMExactSetMetrics(world, seed),
    }
