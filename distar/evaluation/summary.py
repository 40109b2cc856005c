"""Summaries of per-prompt rows: means, percentile-bootstrap 95 % CIs, per-group means."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling rows with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def metric_name(*parts: str) -> str:
    """MLflow accepts letters, digits, ``_ - . / space``: anything else becomes ``_``."""
    return "/".join(re.sub(r"[^\w\-. ]", "_", p).strip() for p in parts if p != "")


# A benchmark whose paper table is one metric by group: ``hps/photo`` = HPSv2.1 on photo prompts,
# ``hps/average`` = the mean of the style means (the paper's Table 3 columns).
PRIMARY = {"hps": "hpsv21"}


CI_PREFIX = "ci95/"  # a summary's CI bounds: ci95/{bench}/{m}_low|high


def summarise(
    rows: pd.DataFrame, benchmark: str, metrics: list[str], seed: int = 0
) -> dict[str, float]:
    """``{bench}/{m}``, ``ci95/{bench}/{m}_low|high`` and ``{bench}/{m}/{group}`` for each
    sample metric ``m`` (groups: Parti category, HPS style)."""
    out: dict[str, float] = {}
    for m in metrics:
        values = rows[m].to_numpy(dtype=np.float64)
        low, high = bootstrap_ci(values, seed=seed)
        out[metric_name(benchmark, m)] = float(values.mean())
        out[CI_PREFIX + metric_name(benchmark, f"{m}_low")] = low
        out[CI_PREFIX + metric_name(benchmark, f"{m}_high")] = high
        by_group = rows.groupby("group")[m].mean()
        if len(by_group) > 1:
            for group, mean in by_group.items():
                out[metric_name(benchmark, m, str(group))] = float(mean)
        if PRIMARY.get(benchmark) == m:
            out.update({metric_name(benchmark, str(g)): float(v) for g, v in by_group.items()})
            out[metric_name(benchmark, "average")] = float(by_group.mean())
    return out


def ci_table(summary: dict[str, float], benchmark: str, metrics: list[str]) -> pd.DataFrame:
    """One row per sample metric: its mean and bootstrap 95 % CI bounds (``summary``'s)."""
    rows = []
    for m in metrics:
        name = metric_name(benchmark, m)
        low, high = (
            summary[CI_PREFIX + metric_name(benchmark, f"{m}_{end}")] for end in ("low", "high")
        )
        rows.append({"metric": name, "mean": summary[name], "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def group_table(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per-group mean of every metric, with the row count: the per-category table."""
    table = rows.groupby("group")[metrics].mean()
    table.insert(0, "n", rows.groupby("group").size())
    return table.reset_index()
