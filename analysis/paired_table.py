"""A sweep's paired table: every row against the baseline (or every pair), item by item within
each seed both finished, at both levels (:mod:`distar.track.paired`):

- ``setting``: the seeds replicate (per-seed paired means, Student-t on S - 1 df), Holm over the
  table. Only this level marks a row (▲ / ▼), and only from ``MIN_SEEDS`` seeds.
- ``checkpoint``: these trained runs on these items (items bootstrapped within seeds), labelled
  so; it does not speak for another training run of the setting.

Each comparison also carries its variance split and what a decision needs (seeds, items per
seed) at the observed effect and at ``--min-effect``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from distar.config.benchmarks import lower_is_better
from distar.config.tree import ConfigError
from distar.track.paired import MIN_SEEDS, checkpoint_level, holm, plan, setting_level

ALPHA = 0.05  # the family-wise level of a table's marks


@dataclass(frozen=True)
class Found:
    """One comparison's paired differences, ``diffs`` [seeds, items] (None: they did not pair,
    ``note`` says why; a note beside diffs says what was left out)."""

    row: str
    baseline: str
    metric: str
    diffs: np.ndarray | None
    groups: np.ndarray | None = None
    note: str = ""
    steps: str = ""  # the evaluation steps paired ("600", "600 vs 0": an untrained model)


def setting_table(found: list[Found]) -> pd.DataFrame:
    """The setting level of every comparison, Holm-adjusted over those with ``MIN_SEEDS``
    seeds or more (a comparison with fewer is never marked, so it does not count in the
    family: which count depends on the seeds run, not on the data)."""
    records = []
    for f in found:
        if f.diffs is None:
            records.append(
                {
                    "row": f.row,
                    "baseline": f.baseline,
                    "metric": f.metric,
                    "level": "setting",
                    "p": math.nan,
                    "n_seeds": 0,
                    "note": f.note,
                    "steps": f.steps,
                }
            )
            continue
        c = setting_level(f.diffs, f.metric)
        records.append(
            {"row": f.row, "baseline": f.baseline, **vars(c), "note": f.note, "steps": f.steps}
        )
    table = pd.DataFrame(records)
    if table.empty:
        return table
    decidable = table["n_seeds"] >= MIN_SEEDS
    table["p_adj"] = math.nan
    if decidable.any():
        table.loc[decidable, "p_adj"] = holm(table.loc[decidable, "p"].tolist())
    return table


def checkpoint_table(found: list[Found], n_boot: int = 2000) -> pd.DataFrame:
    """The checkpoint level of every comparison that paired, Holm-adjusted among themselves."""
    records = [
        {
            "row": f.row,
            "baseline": f.baseline,
            **asdict(checkpoint_level(f.diffs, f.groups, f.metric, n_boot=n_boot)),
            "note": f.note,
            "steps": f.steps,
        }
        for f in found
        if f.diffs is not None
    ]
    table = pd.DataFrame(records)
    if not table.empty:
        table["p_adj"] = holm(table["p"].tolist())
    return table


def plan_columns(
    table: pd.DataFrame, found: list[Found], min_effect: dict[str, float] | None = None
) -> pd.DataFrame:
    """The setting table with each comparison's variance split (``seed_sd``: of a seed's paired
    mean beyond item noise; ``item_sd``: of one item's difference) and plan, at the table's
    Bonferroni level (conservative for Holm): at the observed effect, and at the metric's
    ``--min-effect`` where given."""
    level = ALPHA / max(1, len(found))
    plans, at_min = [], []
    for f in found:
        if f.diffs is None:
            plans.append(None)
            at_min.append(None)
            continue
        plans.append(plan(f.diffs, alpha=level))
        effect = (min_effect or {}).get(f.metric)
        at_min.append(None if effect is None else plan(f.diffs, effect, alpha=level))
    out = table.copy()
    out["seed_sd"] = [math.sqrt(p.seed_var) if p else math.nan for p in plans]
    out["item_sd"] = [math.sqrt(p.item_var) if p else math.nan for p in plans]
    out["seeds_needed"] = [p.seeds if p and p.seeds else math.nan for p in plans]
    out["items_needed"] = [p.items if p and p.items else math.nan for p in plans]
    out["plan"] = [p.text() if p else "–" for p in plans]
    out["min_effect"] = [p.effect if p else math.nan for p in at_min]
    out["plan_min_effect"] = [p.text() if p else "–" for p in at_min]
    return out


def run_sd(table: pd.DataFrame) -> dict[str, float]:
    """Per metric, the sd of one training run's mean around its setting's: a seed's paired
    mean carries two runs (2 run_sd^2 of its seed variance), pooled over the comparisons."""
    out = {}
    for metric, group in table[table["level"] == "setting"].groupby("metric"):
        seed_var = (group["seed_sd"] ** 2).dropna()
        if len(seed_var):
            out[str(metric)] = math.sqrt(float(seed_var.mean()) / 2)
    return out


def verdict_mark(r: pd.Series | dict) -> str:
    """`` ▲`` / `` ▼`` where a setting-level comparison with ``MIN_SEEDS`` seeds or more is
    significant after Holm, by the metric's sense; "" otherwise (checkpoint rows never mark)."""
    if r.get("level") != "setting" or not r["n_seeds"] >= MIN_SEEDS or not r["p_adj"] < ALPHA:
        return ""
    better = (r["delta"] < 0) if lower_is_better(r["metric"]) else (r["delta"] > 0)
    return " ▲" if better else " ▼"


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Per row, its significant setting-level comparisons with the baseline (``▲ eval/reward,
    ...``), for the Table-2 report and the runs' ``distar.paired`` tags; the baseline row says
    so; a row with too few seeds says how many it needs."""
    if table.empty:
        return {}
    baseline = table.attrs["baseline"]
    rows: dict[str, list[dict]] = {}
    for r in table.to_dict("records"):
        if r["baseline"] == baseline and r.get("level") == "setting":
            rows.setdefault(str(r["row"]), []).append(r)
    return {baseline: "baseline", **{row: row_verdict(rs) for row, rs in rows.items()}}


def row_verdict(comparisons: list[dict]) -> str:
    """One row's cell from its setting-level comparisons: its marks (the mark first: a narrow
    cell cut after a few characters still shows it), or why it has none."""
    marks = [f"{verdict_mark(r).strip()} {r['metric']}" for r in comparisons if verdict_mark(r)]
    if marks:
        return ", ".join(marks)
    seeds = max(int(r["n_seeds"]) for r in comparisons)
    if seeds == 0:
        return "no verdict: " + str(comparisons[0]["note"])
    if seeds < MIN_SEEDS:
        needed = [r["seeds_needed"] for r in comparisons if r.get("seeds_needed", 0) > 0]
        power = f" (~{int(min(needed))} for 80 % power at the effects seen)" if needed else ""
        return f"no verdict: {seeds} seed{'s' * (seeds > 1)}, {MIN_SEEDS}+ needed{power}"
    return "n.s. (no significant difference)"


def add_min_effect_flag(parser) -> None:
    parser.add_argument(
        "--min-effect",
        nargs="+",
        default=[],
        metavar="METRIC=DELTA",
        help="plan for this smallest difference worth finding, in the metric's "
        "own units (e.g. eval/reward=0.01 parti/imagereward=0.05): the "
        "seeds and items per seed for 80 %% power at it",
    )


def parse_min_effect(given: list[str]) -> dict[str, float]:
    """``METRIC=DELTA`` pairs; refused naming the flag when malformed or not positive."""
    out = {}
    for item in given:
        metric, _, value = item.partition("=")
        try:
            delta = float(value)
        except ValueError:
            delta = math.nan
        if not metric or not (0 < delta < math.inf) or metric in out:
            raise ConfigError(
                f"--min-effect: got {item!r}; allowed: METRIC=DELTA, DELTA > 0 in "
                "the metric's units, each metric once"
            )
        out[metric] = delta
    return out


def check_min_effect(min_effect: dict[str, float], metrics: set[str]) -> None:
    """Every ``--min-effect`` metric is one the table compares (a typo plans nothing)."""
    unknown = sorted(set(min_effect) - metrics)
    if unknown:
        raise ConfigError(
            f"--min-effect: {unknown[0]} is not compared here; allowed: "
            f"{', '.join(sorted(metrics))}"
        )


def p_text(p: float) -> str:
    """A p-value as printed: a normal tail far out is no more precise than "< 1e-6"."""
    if not p == p:  # NaN: no test
        return "–"
    return "< 1e-6" if p < 1e-6 else f"{p:.3g}"
