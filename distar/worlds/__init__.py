"""Worlds: everything experiment-specific the world-agnostic training loop needs.

Each world is a package under ``distar.worlds`` listed in ``WORLD_PACKAGES``, with a torch-free
``config`` module (its config section and presets, registered with :mod:`distar.config`) and a
``world`` module (its builder, registered in :data:`distar.worlds.base.WORLDS`, imported only
when a world is built). Adding a world = adding a package and its name here.
"""

from __future__ import annotations

import importlib
from typing import Any

WORLD_PACKAGES = ("distar.worlds.gmm", "distar.worlds.sd")


def load_world_configs() -> None:
    for package in WORLD_PACKAGES:
        importlib.import_module(f"{package}.config")


def load_world_builders() -> None:
    for package in WORLD_PACKAGES:
        importlib.import_module(f"{package}.world")


def __getattr__(name: str) -> Any:  # torch loads only when a world is built
    if name in ("WORLDS", "World", "build_world"):
        from distar.worlds import base

        return getattr(base, name)
    raise AttributeError(name)
