"""Every world's torch-free config module, imported here so that their sections and presets
are registered whenever the config is (validation imports no torch).

Adding a world = a package under ``distar/worlds/`` with a ``world_config`` module (its section
and presets) and a ``world`` module (its builder), one line here and one line in
:mod:`distar.worlds.builders`. Nothing in the config, the loop, the sweep layer or the reports
changes.
"""

from __future__ import annotations

from distar.config_base import WORLD_CONFIGS, WORLD_PRESETS
from distar.worlds.gmm import world_config as gmm
from distar.worlds.sd import world_config as sd

WORLD_CONFIG_MODULES = (gmm, sd)
__all__ = ["WORLD_CONFIGS", "WORLD_CONFIG_MODULES", "WORLD_PRESETS"]
