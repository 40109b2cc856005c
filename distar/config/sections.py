"""The building blocks of the config tree: validated sections, range and choice checks that
name the field and what is allowed, the flat-dict / override helpers, and the base and
registries of world sections and presets (each world's torch-free config module
(``distar/config/gmm.py``, ``sd.py``) registers its own; :mod:`distar.config.worlds` imports them
all)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
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
    high_open: bool = False,
) -> None:
    if not math.isfinite(value):  # NaN slips through every bound; inf is never a setting here
        fail(path, value, "a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        fail(path, value, f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}")


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


@dataclass(frozen=True)
class WorldConfig(Section):
    """Base of every world's parameters; the subclass is chosen by ``name``."""

    section: ClassVar[str] = "world"
    text_to_image: ClassVar[bool] = False  # True: its generator can run the eval benchmarks
    # the pyproject extra its builder needs (distar.config.extras); "": none
    extra: ClassVar[str] = ""
    name: str = ""

    def reward_unit(self) -> str:
        """What the world's reward r (and ``eval/reward``) is measured in, in a few words: every
        run records it (``distar.reward_units``) and the reports print it."""
        raise NotImplementedError(f"world {self.name!r}: say what its reward is measured in")

    def trained_metrics(self) -> frozenset[str]:
        """Evaluation metrics that score what the generator is trained on (a learned reward):
        a search refuses to optimise them unless told to (reward hacking scores well there)."""
        return frozenset()


WORLD_CONFIGS: dict[str, type[WorldConfig]] = {}


def register_world_config(name: str):
    def add(cls: type[WorldConfig]) -> type[WorldConfig]:
        WORLD_CONFIGS[name] = cls
        return cls

    return add


@dataclass(frozen=True)
class WorldPreset:
    """A named starting point for ``--world NAME``, owned by the world that registers it.

    A preset whose ``name`` equals its ``world`` holds that world's defaults for every section
    (they apply whenever ``world.name`` selects the world); other presets (``sdxl-tiny``) layer
    their overrides on top. The rest says how the sweep layer talks about the world: the
    translation of the paper's alpha_rew / alpha_cfg into the world's units, the evaluation
    metrics reports show, the search objective and the Pareto axes."""

    name: str
    world: str
    overrides: dict[str, Any] = field(default_factory=dict)  # flat keys of any section
    smoke: dict[str, Any] = field(default_factory=dict)  # --smoke-test on top of the preset
    paper_scales: tuple[float, float] = (1.0, 1.0)  # paper (alpha_rew, alpha_cfg) -> world units
    # report columns, in order: a world's own metric ("reward": eval/reward) or a benchmark's
    # ("parti/imagereward")
    metrics: tuple[str, ...] = ("reward",)
    objective: tuple[str, str] = ("reward", "reward")  # (maximised metric, floor metric)
    floor: float = 0.0  # the floor metric's floor (a ceiling for FID / MMD), in its units
    pareto: tuple[str, str] = ("reward", "reward")  # (x: fidelity, y: reward)
    # a metric's sd between training runs of one setting (a grid's variance split, measured as
    # its description says): the paired stopper's default --stop-run-sd
    run_sd: dict[str, float] = field(default_factory=dict)
    description: str = ""


WORLD_PRESETS: dict[str, WorldPreset] = {}


def register_preset(preset: WorldPreset) -> WorldPreset:
    if preset.name in WORLD_PRESETS:
        raise KeyError(f"world preset {preset.name!r} is registered twice")
    WORLD_PRESETS[preset.name] = preset
    return preset
