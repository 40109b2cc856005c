"""Every world's builder (imported here, so each registers itself in
:data:`distar.worlds.base.WORLDS`), and :func:`build_world`."""

from __future__ import annotations

import torch

from distar.config_base import WorldConfig
from distar.worlds.base import WORLDS, World
from distar.worlds.gmm import world as gmm
from distar.worlds.sd import world as sd

WORLD_MODULES = (gmm, sd)


def build_world(cfg: WorldConfig, device: torch.device, init: str = "stage0") -> World:
    """Build the world named by ``cfg.name``; ``init`` picks the generator's starting point."""
    return WORLDS.get(cfg.name)(cfg, device, init)
