"""Worlds: everything experiment-specific the world-agnostic training loop needs."""

from distar.worlds.base import WORLDS, World, build_world
from distar.worlds import embedded as _embedded  # noqa: F401  (registers "gmm")

__all__ = ["WORLDS", "World", "build_world"]
