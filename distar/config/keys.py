"""Config keys as attributes, not strings: ``K.loss.huber_c == "loss.huber_c"``.

The tree is derived from the config's dataclasses (the ``world`` section: every registered
world's fields), so a key that does not exist fails where it is written, naming the section's
fields, and a renamed field is one attribute to search for. Code outside this package uses a
flat key as data (Tune's search space, overrides, lookups, a registry's kind) only through
``K``; prose (help texts, messages that tell a person what to ``--set``) still spells it."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from distar.config.tree import Config
from distar.config.worlds import WORLD_CONFIGS

Fields = dict[str, "Fields | None"]  # a field name -> its sub-section's fields (None: a leaf)


class Keys:
    """One section's keys: a leaf attribute is its flat key, a sub-section another ``Keys``."""

    def __init__(self, prefix: str, fields: Fields) -> None:
        self._prefix, self._fields = prefix, fields

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            raise AttributeError(
                f"no config key {self._prefix}{name}; allowed: "
                + ", ".join(f"{self._prefix}{f}" for f in sorted(self._fields))
            )
        sub = self._fields[name]
        return Keys(f"{self._prefix}{name}.", sub) if sub is not None else self._prefix + name


def section_fields(cls: type) -> Fields:
    hints = typing.get_type_hints(cls)
    out: Fields = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        out[f.name] = section_fields(kind) if dataclasses.is_dataclass(kind) else None
    return out


def config_fields() -> Fields:
    fields = section_fields(Config)
    worlds = [section_fields(cls) for cls in WORLD_CONFIGS.values()]
    fields["world"] = {name: sub for world in worlds for name, sub in world.items()}
    return fields


K = Keys("", config_fields())
