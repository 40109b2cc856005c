"""Worlds: everything experiment-specific the world-agnostic training loop needs."""

from distar.worlds import embedded as _embedded  # noqa: F401  (registers "gmm")
from distar.worlds.base import WORLDS, World, build_world

__all__ = ["WORLDS", "World", "build_world"]
