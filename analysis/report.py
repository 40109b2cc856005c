"""Table-2-style report of a sweep, read from MLflow: one row per ablation row, mean ± 95 % CI
across seeds, the paper's own numbers beside it, written as markdown and CSV, plus a Pareto plot.

    python -m analysis.report --experiment distar-table2 --tracking-uri sqlite:///runs/table2/mlflow.db
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

from distar.sweep.grid import TABLE2

METRICS = ("reward",)  # the fallback; each world's preset names its own (WorldPreset.metrics)
PAPER_COLUMNS = ("image_reward", "aesthetic", "pickscore", "clip_score")
DEFAULT_PAPER_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/paper_tables.csv"


def missing_store(tracking_uri: str) -> str | None:
    """The path of a local (SQLite or file) store that does not exist, else None."""
    for prefix in ("sqlite:///", "file://"):
        if tracking_uri.startswith(prefix):
            path = Path(tracking_uri.removeprefix(prefix))
            return None if path.exists() else str(path)
    if "://" not in tracking_uri and not Path(tracking_uri).exists():
        return tracking_uri
    return None


def load_runs(tracking_uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """Finished child runs of the experiment (optionally of one sweep), one row each."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    query = "tags.`distar.trial` != ''"
    if sweep:
        query += f" and tags.`distar.sweep` = '{sweep}'"
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string=query, output_format="pandas"
    )
    if runs.empty:
        raise SystemExit(f"no trial runs in experiment {experiment!r} at {tracking_uri}")
    return runs


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


def setting_label(label: str, values: dict[str, object]) -> str:
    shown = ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in values.items())
    return f"{label} · {shown}" if shown else label


def finished(group: pd.DataFrame) -> pd.Series:
    """Runs that finished training (status FINISHED and the final-step tag): the only seeds."""
    done = group["status"] == "FINISHED"
    if "tags.distar.final_step" in group:
        done &= group["tags.distar.final_step"].notna() & (group["tags.distar.final_step"] != "")
    return done


def summarise(
    runs: pd.DataFrame,
    metrics: tuple[str, ...] = METRICS,
    prefix: str = "eval/",
    factors: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per ablation row and setting of its swept parameters, in Table 2 order: mean and
    CI over the *finished* seeds of each MLflow metric ``{prefix}{m}`` (times ``factors[m]``,
    e.g. into the paper's units); ``failed`` says how many runs failed or did not finish."""
    swept = swept_columns(runs)
    order = {row.label: i for i, row in enumerate(TABLE2)}
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
        }
        for m in metrics:
            column = f"metrics.{prefix}{m}"
            if column in group:
                factor = (factors or {}).get(m, 1.0)
                record[m], record[f"{m}_ci95"] = mean_ci(done[column] * factor)
        out.append(record)
    table = pd.DataFrame(out)
    table["_order"] = table["row"].map(order).fillna(len(order))
    return table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)


def paper_numbers(csv_path: Path) -> pd.DataFrame:
    """The paper's Table 2 numbers for each of our rows (NaN where the paper has no such row)."""
    paper = pd.read_csv(csv_path)
    paper = paper[paper["table"] == 2]
    rows = []
    for row in TABLE2:
        hit = paper[
            (paper["model"] == row.paper_model)
            & (paper["reward_scale"].fillna(0) == row.reward_scale)
            & (paper["cfg_scale"].fillna(0) == row.cfg_scale)
        ]
        values = hit.iloc[0] if len(hit) else pd.Series(dtype=float)
        rows.append(
            {
                "row": row.label,
                "paper_model": row.paper_model,
                **{f"paper_{c}": values.get(c, math.nan) for c in PAPER_COLUMNS},
            }
        )
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    shown = [m for m in metrics if m in table]
    paper = [c for c in table.columns if c.startswith("paper_") and c != "paper_model"]
    head = ["row", "seeds", *shown, *paper]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        seeds = str(r["seeds"]) + (f" ({r['failed']})" if r.get("failed") else "")
        cells = [str(r["label"]), seeds]
        cells += [cell(r[m], r[f"{m}_ci95"]) for m in shown]
        cells += ["–" if pd.isna(r[c]) else f"{r[c]:g}" for c in paper]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cell(mean: float, half: float) -> str:
    """``mean ± half``; "–" when no seed finished; no ± for a single seed."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.4f}" if pd.isna(half) else f"{mean:.4f} ± {half:.4f}"


def pareto_plot(table: pd.DataFrame, path: Path, x: str = "precision", y: str = "reward") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for _, r in table.dropna(subset=[x, y]).iterrows():
        ax.errorbar(
            r[x],
            r[y],
            xerr=0.0 if pd.isna(r[f"{x}_ci95"]) else r[f"{x}_ci95"],
            yerr=0.0 if pd.isna(r[f"{y}_ci95"]) else r[f"{y}_ci95"],
            fmt="o",
            capsize=3,
            label=r["label"],
        )
    ax.set(xlabel=f"{x} (fidelity)", ylabel=y, title="reward vs. fidelity, mean ± 95 % CI")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(
    runs: pd.DataFrame,
    out: Path,
    paper_csv: Path | None,
    metrics: tuple[str, ...] = METRICS,
    pareto: tuple[str, str] = ("reward", "reward"),
) -> pd.DataFrame:
    """``metrics`` and the ``pareto`` axes (x fidelity, y reward) come from the world's preset."""
    table = summarise(runs, metrics)
    if paper_csv is not None and paper_csv.exists():
        table = table.merge(paper_numbers(paper_csv), on="row", how="left")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table2.csv", index=False)
    (out / "table2.md").write_text(to_markdown(table, metrics) + "\n")
    x, y = pareto
    if x != y and {x, y} <= set(table.columns):
        pareto_plot(table, out / "pareto.png", x, y)
    return table


def world_of(runs: pd.DataFrame) -> str:
    """The world preset a sweep's runs used (their logged ``world.name`` param)."""
    names = runs.get("params.world.name", pd.Series(dtype=str)).dropna().unique()
    return str(names[0]) if len(names) == 1 else "gmm"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tracking-uri", default="sqlite:///runs/table2/mlflow.db")
    parser.add_argument("--experiment", default="distar-table2")
    parser.add_argument("--sweep", help="only runs of this sweep name")
    parser.add_argument("--out", type=Path, default=Path("runs/report"))
    parser.add_argument("--paper-csv", type=Path, default=DEFAULT_PAPER_CSV)
    args = parser.parse_args(argv)
    from distar.config import world_preset

    missing = missing_store(args.tracking_uri)
    if missing:  # reading must not create an empty store
        print(f"report error: --tracking-uri: no MLflow store at {missing}", file=sys.stderr)
        return 2
    from distar.sweep.runner import TrackingStoreError, check_tracking_server

    try:
        check_tracking_server(args.tracking_uri)  # seconds, not MLflow's minutes of retries
    except TrackingStoreError as error:
        print(f"report error: {error}", file=sys.stderr)
        return 2
    runs = load_runs(args.tracking_uri, args.experiment, args.sweep)
    preset = world_preset(world_of(runs))
    table = build_report(runs, args.out, args.paper_csv, preset.metrics, preset.pareto)
    print(to_markdown(table, preset.metrics))
    if any(c.startswith(("metrics.parti/", "metrics.coco/", "metrics.hps/")) for c in runs):
        from analysis.paper_tables import DEFAULT_HPS_CSV, build

        hps_csv = args.paper_csv.with_name(DEFAULT_HPS_CSV.name)
        for name, text in build(runs, args.out, args.paper_csv, hps_csv).items():
            print(f"\n## {name} (ours beside the paper's, PickScore as a cosine)\n\n{text}")
    print(
        f"\nwritten: {args.out / 'table2.md'}, {args.out / 'table2.csv'}, {args.out / 'pareto.png'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
