"""Every world's footprint module, imported here so that their architectures and measured rows
are registered in :mod:`distar.worlds.cost_model` whenever the planner reads them (torch-free,
as :mod:`distar.config.worlds` for the configs)."""

from __future__ import annotations

from distar.worlds.cost_model import ARCHES, MEASURED, OUT_OF_MEMORY
from distar.worlds.flow import footprint as flow
from distar.worlds.sd import footprint as sd

FOOTPRINT_MODULES = (sd, flow)
__all__ = ["ARCHES", "FOOTPRINT_MODULES", "MEASURED", "OUT_OF_MEMORY"]
