"""What one sweep trial is, as plain data that round-trips through Tune's param space: the
sweep it belongs to (:class:`SweepContext`), the trial itself (:class:`TrialSpec`: a validated
flat config plus the paper's alpha_rew / alpha_cfg it stands for), what a searcher maximises
(:class:`Objective`) and one Tune result."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distar.config import paper
from distar.config.benchmarks import logged_name, lower_is_better
from distar.config.keys import K
from distar.config.tree import Config, ConfigError


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep shares: where runs and files go."""

    name: str
    tracking_uri: str
    experiment: str
    storage: str  # absolute directory: trial outputs, Ray Train state
    parent_run_id: str
    objective: dict[str, Any] | None = None  # Objective fields, for searches
    smoke: bool = False  # a --smoke-test sweep: its runs carry tracking.SMOKE_TAG


@dataclass(frozen=True)
class TrialSpec:
    """``flat_config`` is the trial's config in Tune's flat space; ``paper`` the paper's
    (alpha_rew, alpha_cfg) the trial stands for (a grid row's, or a searcher's draw), translated
    into its ``loss.*`` by :func:`distar.config.paper.to_world`. A trial's :class:`Config` is
    built once, in its driver (:meth:`config`), from Tune's flat space, and handed to its
    workers as is; a grid validates its trials before Ray starts (:meth:`resolved`)."""

    key: str  # unique within the sweep; names the trial's directory and MLflow run
    label: str  # the ablation row, human-readable
    seed: int
    flat_config: dict[str, Any]
    tags: dict[str, str] = dataclasses.field(default_factory=dict)  # MLflow tags of its run
    paper: dict[str, float] = dataclasses.field(default_factory=dict)  # alpha_rew, alpha_cfg
    method: str = ""  # its run name's method: a grid row's short name ("" for a searcher's)

    def to_params(self, sweep: SweepContext) -> dict[str, Any]:
        return {"trial": asdict(self), "sweep": asdict(sweep)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> tuple[TrialSpec, SweepContext]:
        return cls(**params["trial"]), SweepContext(**params["sweep"])

    def _translated(self) -> dict[str, Any]:
        """``flat_config`` with the paper's values in its world's ``loss.*``. A value already
        there that contradicts them is refused, never overwritten: the paper's values are the
        trial's only source of those keys."""
        flat = dict(self.flat_config)
        if not self.paper:
            return flat
        world = flat.get(K.world.name, "gmm")
        wanted = paper.to_world(self.paper["alpha_rew"], self.paper["alpha_cfg"], world)
        clash = sorted(k for k, v in wanted.items() if k in flat and flat[k] != v)
        if clash:
            raise ConfigError(
                f"{clash[0]}: got {flat[clash[0]]!r}; allowed: {wanted[clash[0]]!r}, what "
                f"the trial's {paper.ALPHA_REW} / {paper.ALPHA_CFG} "
                f"{self.paper['alpha_rew']:g} / {self.paper['alpha_cfg']:g} give on {world!r}"
            )
        return {**flat, **wanted}

    def resolved(self) -> TrialSpec:
        """This trial translated and validated now (ConfigError), before any Ray trial: its
        flat config as the :class:`Config` writes it (what a ``--resume`` compares)."""
        flat = Config.from_flat(self._translated()).to_flat()
        return dataclasses.replace(self, flat_config=flat)

    def config(self, sweep: SweepContext) -> Config:
        """The trial's one :class:`Config`, built in its driver and handed to its workers as
        is; its outputs in the sweep's ``trials/<key>``."""
        out_dir = str(Path(sweep.storage) / "trials" / self.key)
        return Config.from_flat({**self._translated(), K.train.out_dir: out_dir})

    def run_name(self) -> str:
        """Its MLflow run name, the values that tell trials apart first (the runs table shows
        the first ~25 characters): the paper's alpha_rew/alpha_cfg, the method (a grid row's;
        a searcher's guidance and c), the seed: ``100/7.5 DI*-In s0``, ``37.2/5.06 out c0.041 s0``.
        """
        flat = self.flat_config
        method = self.method or f"{flat[K.loss.guidance]} c{flat[K.loss.huber_c]:.2g}"
        paper = self.paper
        scales = f"{paper['alpha_rew']:.3g}/{paper['alpha_cfg']:.3g} " if paper else ""
        return f"{scales}{method} s{self.seed}"

    def all_tags(self) -> dict[str, str]:
        """Its tags, with the paper's values under their one name (``paper.alpha_rew``, ...)."""
        if not self.paper:
            return dict(self.tags)
        return {**self.tags, **paper.tags(self.paper["alpha_rew"], self.paper["alpha_cfg"])}


@dataclass(frozen=True)
class Objective:
    """What a searcher maximises: ``metric`` minus ``penalty`` per unit that ``floor_metric``
    falls below ``floor`` (e.g. maximise reward while precision stays >= 0.9); for a metric
    that falls as it improves (FID, MMD) the floor is a ceiling, and the metric is negated."""

    metric: str = "reward"
    floor_metric: str = "precision"
    floor: float = 0.0
    penalty: float = 10.0

    def __call__(self, metrics: dict[str, float]) -> float:
        held = metrics[self.floor_metric]
        shortfall = held - self.floor if lower_is_better(self.floor_metric) else self.floor - held
        value = metrics[self.metric] * (-1.0 if lower_is_better(self.metric) else 1.0)
        return value - self.penalty * max(0.0, shortfall)


TRIAL_DIR = "trial_dir"  # the Tune result key naming the trial's folder (its items/ files)


def tune_result(
    train: dict[str, Any], evals: dict[str, float], step: int, objective: Objective | None
) -> dict[str, Any]:
    """One Tune result: the latest training metrics, the evaluation's metrics under their
    logged names (``eval/reward``, ``parti/imagereward``), the step and (for a search) the
    scalar objective."""
    result = {**train, **{logged_name(k): v for k, v in evals.items()}, "step": step}
    if objective is not None and evals:
        result["objective"] = objective(evals)
    return result
