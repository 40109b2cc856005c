"""What a world supplies to the training loop, and the registry worlds are chosen from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from distar.config import WorldConfig
from distar.registry import Registry


class World(Protocol):
    """Reference diffusion + assistant + generator + rewards + metrics of one experiment.

    ``reference`` and ``assistant`` are EDM denoisers ``D(x, sigma, cond)``; ``null_cond`` is the
    prompt index of the unconditional branch. ``reference`` must be frozen but differentiable in x.
    """

    config: WorldConfig
    null_cond: int
    sigma_data: float
    generator: nn.Module
    assistant: nn.Module

    def reference(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor: ...

    def sample_prompts(self, n: int, rng: torch.Generator) -> Tensor: ...

    def sample_latents(self, n: int, rng: torch.Generator) -> Tensor: ...

    def reward(self, x0: Tensor, cond: Tensor) -> Tensor: ...

    def evaluate(self, n_per_prompt: int, seed: int) -> dict[str, float]: ...

    def plot(self, path: Path, n_per_prompt: int, seed: int) -> Path: ...


WorldBuilder = Callable[[WorldConfig, torch.device, str], World]
WORLDS: Registry[WorldBuilder] = Registry("world")


def build_world(cfg: WorldConfig, device: torch.device, init: str = "stage0") -> World:
    """Build the world named by ``cfg.name``; ``init`` picks the generator's starting point."""
    return WORLDS.get(cfg.name)(cfg, device, init)
