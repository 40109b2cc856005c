"""Warm start: a finished sweep's runs (the Table 2 grid's, an earlier search's) as the search's
first observations (its GP models from its first trial instead of drawing at random) and as the
first records of ASHA's rungs (a trial is cut against them too, not against one rival).

A run counts only where it is an observation of the function the search samples: the same
world, loss, noise, optimiser and training length as the search's trials (its ``params.*`` equal
the search's base config), a setting inside the searched ranges, finished, with both searched
metrics. Its value is the metric at its final evaluation, as a searched trial's is."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distar.config import paper
from distar.config.benchmarks import logged_name
from distar.config.tree import Config, ConfigError
from distar.raytune.searcher import PARAMETER, FloorShortfall, same_point
from distar.raytune.spec import Objective
from distar.track import tracking

# Config keys a warm run may differ in from the search's base: what the searcher sets, and what
# decides where, how often or how precisely a run was measured, not what it trained.
SEARCHED = ("loss.huber_c", "loss.guidance", "loss.reward_scale", "loss.cfg_scale")
SEARCHED += ("loss.cfg_convention", "train.seed")
HOW_RUN = ("train.out_dir", "train.device", "train.log_every", "train.eval_every")
HOW_RUN += ("train.checkpoint_every", "resources.use_gpu", "resources.cpus_per_worker")
HOW_RUN += ("resources.max_failures", "resources.strategy", "resources.cpu_offload")
HOW_RUN += ("world.cache_dir",)
# evaluation size and seed change a metric's noise, not its expectation; plotting changes neither
MEASURED = ("eval.samples_per_prompt", "eval.images_per_prompt", "eval.batch_size")
MEASURED += ("eval.seed", "eval.plot")
NOT_COMPARED = frozenset(SEARCHED + HOW_RUN + MEASURED)


@dataclass(frozen=True)
class WarmPoint:
    """One finished run as the searcher sees it: its setting (Optuna parameter names,
    :data:`PARAMETER`), its metric and its floor shortfall (<= 0: the floor held)."""

    params: dict[str, Any]
    value: float
    shortfall: float
    label: str
    run_id: str = ""  # where its evaluations fall where the search's do (else "")
    rungs: tuple[float, ...] = ()  # the scalar objective at each of those evaluations


def store_uri(source: str) -> str:
    """``--warm-start``: a tracking URI as given, or a sweep's ``--storage`` folder (its
    ``mlflow.db``)."""
    if "://" in source:
        return source
    return tracking.default_tracking_uri(Path(source))


def load(
    source: str, base: Config, ranges: tuple, objective: dict
) -> tuple[str, list[WarmPoint], list[str]]:
    """``--warm-start source``: its store's URI, its runs that observe the function the search
    on ``base`` samples (:func:`warm_points`, with their objective at each evaluation where
    those fall where the search's do) and why each other run is left out. A store that is
    missing, unreadable or holds no such run is refused naming the flag."""
    uri = store_uri(source)
    with readable(uri):
        tracking.require_store(uri, "--warm-start", " (a finished sweep's)")
        client = tracking.client(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = tracking.runs_frame(uri, ids, "tags.`distar.trial` != ''")
    flat = base.to_flat()
    points, skipped = ([], []) if runs.empty else warm_points(runs, flat, ranges, objective)
    if not points:
        why = "; ".join(skipped[:3]) or "no trial runs"
        raise ConfigError(f"--warm-start: no run at {uri} observes this search's trials ({why})")
    steps = base.train.evaluation_steps()
    with readable(uri):
        points = [
            replace(p, rungs=rung_values(client, p.run_id, steps, objective)) if p.run_id else p
            for p in points
        ]
    return uri, points, skipped


@contextlib.contextmanager
def readable(uri: str):
    """What reading the store raises (down, unreachable, not MLflow's) as one line naming
    ``--warm-start``."""
    try:
        yield
    except (tracking.TrackingStoreError, *tracking.TRACKING_ERRORS) as error:
        raise tracking.unreadable("--warm-start", uri, error) from None


def rung_values(client, run_id: str, steps: list[int], objective: dict) -> tuple[float, ...]:
    """The run's scalar objective (:class:`Objective`) at each of the evaluation ``steps``
    (:meth:`TrainConfig.evaluation_steps`), as ASHA's rungs record a trial's; up to the first
    of them the run has no record of."""
    score = Objective(**objective)
    names = (objective["metric"], objective["floor_metric"])
    history = {
        n: {m.step: m.value for m in client.get_metric_history(run_id, logged_name(n))}
        for n in names
    }
    values = []
    for step in steps:
        if any(step not in history[n] for n in names):
            break
        values.append(score({n: history[n][step] for n in names}))
    return tuple(values)


def warm_points(
    runs, base_flat: dict[str, Any], ranges: tuple, objective: dict
) -> tuple[list[WarmPoint], list[str]]:
    """The runs that observe the searched function (module docstring), as :class:`WarmPoint`;
    and one line per run left out, saying why. ``ranges``: (alpha_rew, alpha_cfg, huber_c; None
    where c is not searched: a run then observes the search only at the base config's c)."""
    metric = f"metrics.{logged_name(objective['metric'])}"
    floor = f"metrics.{logged_name(objective['floor_metric'])}"
    shortfall = FloorShortfall(objective["floor_metric"], objective["floor"])
    points, skipped = [], []
    for (_, run), done in zip(runs.iterrows(), tracking.finished(runs), strict=True):
        label = run.get("tags.distar.label") or run.get("run_id", "?")
        why = unusable(run, done, base_flat, ranges, (metric, floor))
        if why:
            skipped.append(f"{label}: {why}")
            continue
        setting = {
            PARAMETER["guidance"]: run["params.loss.guidance"],
            PARAMETER["alpha_rew"]: float(run[f"params.{paper.ALPHA_REW}"]),
            PARAMETER["alpha_cfg"]: float(run[f"params.{paper.ALPHA_CFG}"]),
        }
        if ranges[2] is not None:  # c searched
            setting[PARAMETER["huber_c"]] = float(run["params.loss.huber_c"])
        result = {logged_name(objective["floor_metric"]): float(run[floor])}
        same = run.get("params.train.eval_every") == str(base_flat["train.eval_every"])
        run_id = str(run["run_id"]) if same else ""
        points.append(WarmPoint(setting, float(run[metric]), shortfall(result), str(label), run_id))
    return points, skipped


def unusable(
    run, done: bool, base_flat: dict[str, Any], ranges: tuple, metrics: tuple[str, str]
) -> str:
    """Why ``run`` (``done``: it finished training) is no observation of the searched function
    ('' where it is one)."""
    if not done:
        return f"not finished ({run.get('status')})"
    for column in metrics:
        value = run.get(column)
        if value is None or not math.isfinite(float(value)):
            return f"no {column.removeprefix('metrics.')}"
    fixed_c = {"loss.huber_c"} if ranges[2] is None else set()  # then compared as the rest
    for key, value in base_flat.items():
        if (key not in NOT_COMPARED or key in fixed_c) and run.get(f"params.{key}") != str(value):
            return f"{key} {run.get(f'params.{key}')} (the search's: {value})"
    names = (paper.ALPHA_REW, paper.ALPHA_CFG, "loss.huber_c")
    for name, bounds in zip(names, ranges, strict=True):
        if bounds is None:
            continue
        low, high = bounds
        value = float(run.get(f"params.{name}", "nan"))
        if not low <= value <= high:
            return f"{name} {value:g} outside the searched {low:g} to {high:g}"
    if run.get("params.loss.guidance") not in ("in", "out"):
        return f"loss.guidance {run.get('params.loss.guidance')}"
    return ""


def describe(uri: str, points: list[WarmPoint], skipped: list[str], metric: str) -> list[str]:
    """The console's lines: each observation (with what ASHA's rungs record of it), then each
    run left out and why."""
    lines = [f"warm start from {uri}: {len(points)} finished runs, observed before any trial:"]
    for p in points:
        shown = f"{metric} {p.value:.4g}, floor shortfall {p.shortfall:.4g}"
        if p.rungs:  # ASHA's rungs record them (searcher.record_warm_rungs)
            shown += "; objective at its evaluations " + ", ".join(f"{r:.4g}" for r in p.rungs)
        lines.append(f"  {p.label}: {shown}")
    return lines + [f"  left out: {line}" for line in skipped]


def untrained(prior: list[dict[str, Any]], warm: list[WarmPoint]) -> list[dict[str, Any]]:
    """The prior's points that no warm run already observed (those are not trained again;
    compared on the searched parameters, c only where it is searched)."""
    return [p for p in prior if not any(same_point(p, w.params) for w in warm)]
