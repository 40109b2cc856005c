"""The building blocks of the config tree: validated sections, range and choice checks that
name the field and what is allowed, and the flat-dict / override helpers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown or out of range."""


def fail(path: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{path}: got {value!r}; allowed: {allowed}")


def check_choice(path: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        fail(path, value, "one of " + ", ".join(repr(a) for a in allowed))


def check_range(
    path: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    if not math.isfinite(value):  # NaN slips through every bound; inf is never a setting here
        fail(path, value, "a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        fail(path, value, f"{'(' if low_open else '['}{lo}, {hi}]")


class Section:
    """Base of every config section: type coercion, then the section's own checks."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            path = f"{self.section}.{f.name}"
            kind = _SCALAR_TYPES.get(f.type)
            if kind is None:  # a nested section
                if not isinstance(value, Section):
                    fail(path, value, f"a {f.type} section")
                continue
            object.__setattr__(self, f.name, _coerce(path, value, kind))
        self.validate()

    def validate(self) -> None:
        """Range and choice checks; each section overrides this."""


_SCALAR_TYPES = {"float": float, "int": int, "str": str, "bool": bool}


def _coerce(path: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    fail(path, value, f"a value of type {kind.__name__}")
    return None  # unreachable: fail raises


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.reward_scale=10"`` -> ``("loss.reward_scale", 10)``; values parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. loss.reward_scale=10")
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" (no dot) as a string; a number is what was meant
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value
