"""Bounded, differentiable "preference" rewards for the embedded world that can be hacked:
their maximum lies off the reference's support, so a large reward scale visibly leaves it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distar.config.gmm import GMM_REWARD_NAMES
from distar.config.keys import K
from distar.util.registry import Registry
from distar.worlds.gmm.mixture import ConditionalGMM

RewardFn = Callable[[Tensor, Tensor], Tensor]
GMM_REWARDS: Registry[Callable[[ConditionalGMM, float], RewardFn]] = Registry(
    K.world.reward, GMM_REWARD_NAMES
)


def preferred_directions(mixture: ConditionalGMM) -> Tensor:
    """``[P + 1, d]`` unit vectors: each prompt prefers the direction of its first mode; the
    null prompt prefers the first mode overall."""
    owners = mixture.owners()
    first = torch.stack([torch.nonzero(owners == p)[0, 0] for p in range(mixture.n_prompts)])
    means = torch.cat([mixture.means[first], mixture.means[:1]])
    return means / means.norm(dim=1, keepdim=True)


@GMM_REWARDS.register("directional")
def directional_reward(mixture: ConditionalGMM, sharpness: float) -> RewardFn:
    """``r(x, c) = tanh(k <x, v_c> / R)``: favours the prompt's first mode over its others and,
    past it, pays more the further x runs off the support along ``v_c`` (sup = 1)."""
    v = preferred_directions(mixture)
    radius = mixture.means.norm(dim=1).max()

    def reward(x0: Tensor, cond: Tensor) -> Tensor:
        return torch.tanh(sharpness * (x0 * v[cond]).sum(1) / radius)

    return reward


@GMM_REWARDS.register("bump")
def bump_reward(mixture: ConditionalGMM, sharpness: float) -> RewardFn:
    """``r(x, c) = exp(-k ||x - h_c||^2 / (2 (R/2)^2))`` with its peak ``h_c = 1.6 R v_c`` outside
    the support; at the preferred mode itself r ~ 0.49 for k = 1."""
    v = preferred_directions(mixture)
    radius = mixture.means.norm(dim=1).max()
    peak = 1.6 * radius * v
    width2 = (radius / 2) ** 2

    def reward(x0: Tensor, cond: Tensor) -> Tensor:
        return torch.exp(-sharpness * (x0 - peak[cond]).square().sum(1) / (2 * width2))

    return reward


GMM_REWARDS.complete()
