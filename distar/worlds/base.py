"""What a world supplies to the training loop and the evaluation harness (:class:`World`, every
method either calls), and the registry of world builders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from distar.config.keys import K
from distar.config.sections import WorldConfig
from distar.config.worlds import WORLD_CONFIGS
from distar.method.contract import TrainingWorld
from distar.util.registry import Registry

if TYPE_CHECKING:
    import pandas as pd


class EvalGenerator(Protocol):
    """A world's generator as the evaluation harness calls it: ``noise_shape`` and
    ``(prompts, noise) -> samples`` (images in [0, 1] for a text-to-image world; points for the
    embedded world, whose prompts are ``"prompt <i>"``). Each sample's noise comes from outside,
    so the harness fixes it per (seed, benchmark, prompt, replica)."""

    noise_shape: tuple[int, ...]

    def __call__(self, prompts: Sequence[str], noise: Tensor) -> Tensor: ...


@runtime_checkable
class World(TrainingWorld, Protocol):
    """Reference diffusion + assistant + generator + rewards + metrics of one experiment: what
    the method's step needs (:class:`distar.method.contract.TrainingWorld`), and what the loop
    and the evaluation harness call besides (sharding, metrics, plots, the eval generator)."""

    config: WorldConfig
    # True: once built, every network is on the device and holds rank 0's weights on every
    # rank; the world itself broadcasts them, once, in buckets
    # (:func:`distar.runtime.distributed.broadcast_networks`), and nothing else does. False for
    # a world built to be sharded from the host (``build_world(..., sharded=True)``): its large
    # networks reach the device, with rank 0's weights, only in shard()
    placed: bool

    def shard(self, offload: bool) -> None:
        """Shard every network with FSDP2 in place (``resources.strategy=fsdp``), through
        :func:`distar.runtime.sharding.shard_network`, once every rank holds the same weights.
        ``offload``: trained shards and their optimizer state on the host."""
        ...

    def evaluate(self, samples_per_prompt: int, seed: int) -> dict[str, float]:
        """The world's own metrics of the current generator (``eval/<name>`` in every run):
        ``samples_per_prompt`` samples of each of its fixed evaluation prompts."""
        ...

    def item_scores(self, samples_per_prompt: int, seed: int) -> pd.DataFrame | None:
        """:meth:`evaluate`'s per-sample values, one row per sample keyed like a benchmark's
        per-sample rows (prompt, group, index, replica, seed), so two runs' evaluations pair
        sample by sample (``distar.track.paired``); None where a world has none of its own (the
        text-to-image worlds: their items are their benchmarks' per-sample rows)."""
        ...

    def plot(self, path: Path, samples_per_prompt: int, seed: int) -> Path:
        """A picture of the current generator's samples written to ``path``, which it returns
        (the embedded world scatters ``samples_per_prompt`` points a prompt; a text-to-image
        world draws a grid of one image for each evaluation prompt)."""
        ...

    def eval_generator(self, resolution: int = 0) -> EvalGenerator:
        """The current generator for the evaluation harness; a text-to-image world resizes its
        images to ``resolution`` (0: as generated)."""
        ...


# (world config, device, init, sharded): ``sharded`` says the run shards the world with FSDP2
# next; a world whose networks would not fit the device unsharded may then keep them on the
# host until shard() (``placed = False``)
WorldBuilder = Callable[[WorldConfig, torch.device, str, bool], World]
# filled by each world's module, completed in distar.worlds.builders (which imports them all)
WORLDS: Registry[WorldBuilder] = Registry(K.world.name, tuple(WORLD_CONFIGS))
# a world's checks of a run's config against every file it will read, without loading a weight
# (raises WorldLoadError or ConfigError naming the field); worlds that read no file register none
WorldCheck = Callable[[Any], None]  # the whole distar.config.tree.Config
WORLD_CHECKS: Registry[WorldCheck] = Registry("world check")
