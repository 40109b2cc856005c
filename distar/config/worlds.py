"""Every world's torch-free config module, imported here so that their sections and presets
are registered whenever the config is (validation imports no torch).

Adding a world = its config module here in ``distar/config/`` (its section and presets), a
package under ``distar/worlds/`` with a ``world`` module (its builder), one line here and one line
in :mod:`distar.worlds.builders`. Nothing in the config, the loop, the sweep layer or the reports
changes.
"""

from __future__ import annotations

from distar.config import flow, gmm, sd
from distar.config.sections import WORLD_CONFIGS, WORLD_PRESETS

WORLD_CONFIG_MODULES = (gmm, sd, flow)
__all__ = ["WORLD_CONFIGS", "WORLD_CONFIG_MODULES", "WORLD_PRESETS"]
