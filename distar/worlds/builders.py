"""Every world's builder (imported here, so each registers itself in
:data:`distar.worlds.base.WORLDS`), and :func:`build_world`."""

from __future__ import annotations

import torch

from distar.config.extras import require
from distar.config.keys import K
from distar.config.sections import WorldConfig
from distar.config.tree import Config
from distar.util.cache import cache_root
from distar.util.refusals import check_writable_dir
from distar.worlds.base import WORLD_CHECKS, WORLDS, World
from distar.worlds.flow import world as flow
from distar.worlds.gmm import world as gmm
from distar.worlds.sd import world as sd

WORLD_MODULES = (gmm, sd, flow)
WORLDS.complete()  # every world the config knows has its builder


def check_world(config: Config) -> None:
    """Every path the run's world will read, and what the config asks of those files (noise
    ranges inside the reference's schedule), checked before a weight loads and before Ray
    starts (the entry points call it; raises WorldLoadError / ConfigError); and the cache folder
    every world may write (stage-0 fits, tiny components). First of all, that the world's
    optional dependencies are installed (:class:`MissingExtraError`)."""
    cfg = config.world
    if cfg.extra:
        require(cfg.extra, f"world {cfg.name!r}")
    where = K.world.cache_dir if getattr(cfg, "cache_dir", "") else "DISTAR_CACHE"
    check_writable_dir(cache_root(getattr(cfg, "cache_dir", "")), f"{where} (the cache folder)")
    if cfg.name in WORLD_CHECKS:
        WORLD_CHECKS.get(cfg.name)(config)


def build_world(
    cfg: WorldConfig, device: torch.device, init: str = "stage0", sharded: bool = False
) -> World:
    """Build the world named by ``cfg.name``; ``init`` picks the generator's starting point;
    ``sharded``: FSDP2 shards it next (:data:`distar.worlds.base.WorldBuilder`)."""
    return WORLDS.get(cfg.name)(cfg, device, init, sharded)
