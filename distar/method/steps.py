"""What the loop calls of a method (:class:`Step`) and which method a run takes
(:func:`build_step`): the one place the loop asks, so a new step shape is a class in this
package and a line here, with the loop unchanged."""

from __future__ import annotations

from typing import Protocol

import torch

from distar.config.tree import Config
from distar.method.contract import TrainingWorld
from distar.method.di_star import DIStar
from distar.method.draws import Draws
from distar.runtime.step_parts import FiniteGuard


class Step(Protocol):
    """One training step's updates and the optimisers they own (saved in checkpoints by name)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, step: int, diagnose: bool) -> dict[str, torch.Tensor]:
        """Every update of one step on its seeded ``draws``; device scalars to log."""
        ...


def build_step(
    config: Config, world: TrainingWorld, draws: Draws, guard: FiniteGuard, sharded: bool
) -> Step:
    """The run's method, built after any sharding (its optimisers hold the shards)."""
    return DIStar(config, world, draws, guard, sharded)
