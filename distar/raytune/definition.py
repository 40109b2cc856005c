"""A sweep's definition on disk (``grids/<name>.json``): written when it starts, compared on
``--resume`` so that a resumed sweep is the one that was started (Tune would silently resume the
old one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distar.config.tree import ConfigError
from distar.raytune.settings import SweepSettings


def definition_path(settings: SweepSettings) -> Path:
    return settings.storage / "grids" / f"{settings.name}.json"


def normalised(definition: dict[str, Any]) -> dict[str, Any]:
    """As it reads back from JSON (tuples become lists), so a resumed sweep compares equal."""
    return json.loads(json.dumps(definition, sort_keys=True, default=str))


def check_definition(settings: SweepSettings, definition: dict[str, Any]) -> None:
    """On ``--resume`` a definition other than the recorded one is refused, naming what
    differs (Tune would silently resume the old one)."""
    if not settings.resume:
        return
    path = definition_path(settings)
    if not path.exists():
        raise ConfigError(
            f"--resume: no sweep {settings.name!r} to resume under {settings.storage}; "
            "run it without --resume, or give its --storage and --name"
        )
    diff = describe_difference(json.loads(path.read_text()), normalised(definition))
    if diff:
        raise ConfigError(
            f"--resume: sweep {settings.name!r} was started with other settings ({diff}); "
            "give the same flags, or another --name"
        )


def record_definition(settings: SweepSettings, definition: dict[str, Any]) -> None:
    """What the sweep runs, in ``grids/<name>.json``, for a later ``--resume`` to check."""
    path = definition_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(normalised(definition), indent=1, sort_keys=True))


def describe_difference(old: dict[str, Any], new: dict[str, Any], shown: int = 3) -> str:
    """``trials added: a, b; removed: c; changed: d (train.steps 600 -> 10)``, briefly."""

    def listed(items: list[str], sep: str = ", ") -> str:
        return sep.join(items[:shown]) + (" ..." if len(items) > shown else "")

    parts = []
    added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
    for word, keys in (("added", added), ("removed", removed)):
        if keys:
            parts.append(f"{word}: {listed(keys)}")
    changed = []
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            a, b = old[key], new[key]
            if isinstance(a, dict) and isinstance(b, dict):
                fields = [f for f in sorted(a.keys() | b.keys()) if a.get(f) != b.get(f)]
                f = fields[0]
                changed.append(f"{key} ({f} {a.get(f)} -> {b.get(f)})")
            else:
                changed.append(f"{key} ({a} -> {b})")
    if changed:
        parts.append(f"changed: {listed(changed, '; ')}")
    return "; ".join(parts)
