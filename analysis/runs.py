"""A sweep's runs as MLflow recorded them, summarised: one row per ablation row and swept
setting, mean and 95 % CI over the finished seeds only, and the paper's values each run carries
in its tags (``paper.alpha_rew``, ``paper.alpha_cfg``, ``paper.model``, ``paper.method``)."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from distar.config import paper
from distar.config.extras import require
from distar.config.tree import ConfigError
from distar.track import tracking
from distar.track.tracking import (
    finished,
    setting_label,
)

METRICS = ("reward",)  # the fallback; each world's preset names its own (WorldPreset.metrics)
PAPER_TAGS = (paper.MODEL, paper.METHOD, paper.ALPHA_REW, paper.ALPHA_CFG)


def load_runs(tracking_uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """The trial runs of the experiment (optionally of one sweep), one row each; an experiment
    or sweep with none is refused naming its flag and what is there (:class:`ConfigError`)."""
    found = tracking.client(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        names = [e.name for e in tracking.client(tracking_uri).search_experiments()]
        raise ConfigError(
            f"--experiment: no experiment {experiment!r} at {tracking_uri}; "
            f"allowed: {', '.join(map(repr, names)) or 'none there'}"
        )
    trials = "tags.`distar.trial` != ''"
    runs = tracking.runs_frame(tracking_uri, [found.experiment_id], trials)
    if runs.empty:
        raise ConfigError(f"--experiment: no trial runs in {experiment!r} at {tracking_uri}")
    if sweep is not None:  # compared here, not in a filter string: a name may hold a quote
        sweeps = sorted(set(runs["tags.distar.sweep"].dropna()))
        runs = runs[runs["tags.distar.sweep"] == sweep]
        if runs.empty:
            raise ConfigError(f"--sweep: got {sweep!r}; allowed: {', '.join(map(repr, sweeps))}")
    return runs


def check_store(uri: str) -> None:
    """A store to read: missing or unreachable ones are refused naming ``--tracking-uri``
    (reading never creates one); MLflow itself first (one line naming its extra)."""
    require("sweep", "reading runs from MLflow", ("mlflow",))
    tracking.require_store(uri, "--tracking-uri")  # seconds, not MLflow's minutes of retries


def read_runs(args) -> pd.DataFrame:
    """The sweep's runs; a store that is missing, unreachable or not an MLflow store is
    refused naming ``--tracking-uri``."""
    uri = args.tracking_uri
    check_store(uri)
    try:
        return load_runs(uri, args.experiment, args.sweep)
    except tracking.TRACKING_ERRORS as error:  # MLflow's classes: imported when needed
        raise tracking.unreadable("--tracking-uri", uri, error) from None


def mean_ci(values: pd.Series) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (NaN for a single seed)."""
    values = values.dropna().astype(float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values.iloc[0]), math.nan  # one seed: no interval
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


NOT_SWEPT = ("params.train.seed", "params.train.out_dir")


def swept_columns(runs: pd.DataFrame) -> list[str]:
    """Parameters that differ between runs of one ablation row (other than the seed): runs that
    differ in any of them are different settings, never extra seeds of one."""
    params = [c for c in runs.columns if c.startswith("params.") and c not in NOT_SWEPT]
    by_label = runs.groupby("tags.distar.label")[params].nunique(dropna=False)
    return [c for c in params if (by_label[c] > 1).any()]


def summarise(
    runs: pd.DataFrame,
    metrics: tuple[str, ...] = METRICS,
    prefix: str = "eval/",
) -> pd.DataFrame:
    """One row per ablation row and setting of its swept parameters, in Table 2 order: mean and
    CI over the *finished* seeds of each MLflow metric ``{prefix}{m}``; ``failed`` says how many
    runs failed or did not finish."""
    swept = swept_columns(runs)
    out = []
    for keys, group in runs.groupby(["tags.distar.label", *swept], sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        label = setting_label(keys[0], dict(zip(swept, keys[1:], strict=True)))
        done = group[finished(group)]
        lost = len(group) - len(done)
        record: dict[str, object] = {
            "label": label,
            "row": keys[0],
            "seeds": len(done),
            "failed": f"{lost} of {len(group)} seeds failed or unfinished" if lost else "",
            **recorded_paper_values(group),
        }
        for m in metrics:
            column = f"metrics.{m if '/' in m else prefix + m}"  # benchmarks: parti/...
            if column in group:
                record[m], record[f"{m}_ci95"] = mean_ci(done[column])
        out.append(record)
    table = pd.DataFrame(out)
    table["_order"] = table["row"].map(paper.row_order)
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def decimals(half: float) -> int:
    """The decimal places that show a CI half-width to two significant digits: the mean is
    rounded to the same place (digits beyond it are noise the CI does not support)."""
    return max(0, 1 - math.floor(math.log10(half)))


def cell(mean: float, half: float) -> str:
    """``mean ± half``, rounded to what the CI supports; "–" when no seed finished; no ± for a
    single seed (4 significant digits); "± 0" when the seeds agree exactly."""
    if pd.isna(mean):
        return "–"
    if pd.isna(half) or half == 0:
        shown = f"{mean:#.4g}".rstrip(".")
        return shown if pd.isna(half) else f"{shown} ± 0"
    places = decimals(half)
    return f"{mean:.{places}f} ± {half:.{places}f}"


PAPER_PREFIX = "paper_"  # a report's columns of the paper's own (SDXL) numbers


def column_title(column: str) -> str:
    """A report column's header: the paper's numbers, wherever they stand beside ours, are
    marked as the paper's SDXL ones (they are not this world's)."""
    if column.startswith(PAPER_PREFIX):
        return f"paper, SDXL: {column.removeprefix(PAPER_PREFIX)}"
    return column


def recorded_paper_values(group: pd.DataFrame) -> dict[str, object]:
    """The paper's values the runs of one row recorded as tags (None where none did)."""
    out: dict[str, object] = {}
    for tag in PAPER_TAGS:
        column = f"tags.{tag}"
        values = group[column].dropna() if column in group else pd.Series(dtype=str)
        values = values[values != ""]
        out[tag] = values.iloc[0] if len(values) else None
    return out


def recorded_published(record: pd.Series) -> paper.Scores | None:
    """The paper's Table 2 numbers of a summarised row, found by the paper values its runs
    recorded (None where they recorded none, or the paper has no such row)."""
    model, rew, cfg = record[paper.MODEL], record[paper.ALPHA_REW], record[paper.ALPHA_CFG]
    if not (model and rew and cfg):
        return None
    return paper.published(model, float(rew), float(cfg))


def published_value(scores: paper.Scores | None, column: str) -> float:
    """One of the paper's columns (NaN where there is no published row)."""
    return math.nan if scores is None else getattr(scores, column)
