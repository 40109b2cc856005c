"""Table-2-style report of a sweep, read from MLflow: one row per ablation row, mean ± 95 % CI
across seeds, the paper's own numbers beside it, written as markdown and CSV, plus a Pareto plot.

    python -m analysis.report --experiment distar-table2 --tracking-uri sqlite:///runs/table2/mlflow.db
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.compare import paired_report, per_item_metrics
from analysis.paired_table import (
    add_min_effect_flag,
    check_min_effect,
    parse_min_effect,
    verdicts,
)
from analysis.paper_tables import build
from analysis.runs import (
    METRICS,
    PAPER_PREFIX,
    cell,
    column_title,
    published_value,
    read_runs,
    recorded_published,
    summarise,
)
from distar.config import paper
from distar.config.tree import world_preset
from distar.track.tracking import (
    CFG_CONVENTION_TAG,
    REWARD_UNITS_TAG,
    SMOKE_TAG,
    TrackingStoreError,
)
from distar.util.refusals import Outputs, check_writable_dir, refusing

PAPER_COLUMNS = ("image_reward", "aesthetic", "pickscore", "clip_score")


def paper_numbers(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 numbers of each summarised row, found by the paper values its runs
    recorded (NaN where the paper has no such row, or the runs recorded none)."""
    out = table.copy()
    published = [recorded_published(record) for _, record in out.iterrows()]
    out["paper_model"] = out[paper.MODEL]
    for column in PAPER_COLUMNS:
        out[f"paper_{column}"] = [published_value(p, column) for p in published]
    return out


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> str:
    """The Table-2 markdown; a ``paired`` column (:func:`analysis.compare.verdicts`) when the
    table has one: which metrics a row significantly beats (▲) or loses (▼) to the baseline."""
    shown = [m for m in metrics if m in table]
    paper = [c for c in table.columns if c.startswith(PAPER_PREFIX) and c != "paper_model"]
    verdict = ["paired"] if "paired" in table else []
    head = ["row", "seeds", *shown, *verdict, *paper]
    lines = ["| " + " | ".join(map(column_title, head)) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        seeds = str(r["seeds"]) + (f" ({r['failed']})" if r.get("failed") else "")
        cells = [str(r["label"]), seeds]
        cells += [cell(r[m], r[f"{m}_ci95"]) for m in shown]
        cells += [str(r["paired"]) for _ in verdict]
        cells += ["–" if pd.isna(r[c]) else f"{r[c]:g}" for c in paper]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pareto_plot(table: pd.DataFrame, path: Path, x: str = "precision", y: str = "reward") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    shown = table.dropna(subset=[x, y])
    colours = plt.get_cmap("tab20")(range(len(shown)))  # one colour per row (tab10 repeats)
    markers = "osD^vP*Xh<>p"
    for i, (_, r) in enumerate(shown.iterrows()):
        ax.errorbar(
            r[x],
            r[y],
            xerr=0.0 if pd.isna(r[f"{x}_ci95"]) else r[f"{x}_ci95"],
            yerr=0.0 if pd.isna(r[f"{y}_ci95"]) else r[f"{y}_ci95"],
            fmt=markers[i % len(markers)],
            color=colours[i],
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
    metrics: tuple[str, ...] = METRICS,
    pareto: tuple[str, str] = ("reward", "reward"),
    paired: dict[str, str] | None = None,
    above: str = "",
    below: str = "",
) -> pd.DataFrame:
    """``metrics`` and the ``pareto`` axes (x fidelity, y reward) come from the world's preset;
    the paper's numbers from the paper values each run recorded; ``paired``: each row's
    verdict against the baseline (:func:`analysis.compare.verdicts`); ``above`` / ``below``:
    what to know before reading it (:func:`caveats`, :func:`paper_note`)."""
    table = paper_numbers(summarise(runs, metrics))
    if paired:
        table["paired"] = [paired.get(label, "–") for label in table["label"]]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table2.csv", index=False)
    text = "\n\n".join(filter(None, [above, to_markdown(table, metrics), below, units_line(runs)]))
    (out / "table2.md").write_text(text + "\n")
    x, y = pareto
    if x != y and {x, y} <= set(table.columns):
        pareto_plot(table, out / "pareto.png", x, y)
    return table


SMOKE_NOTE = (
    "smoke test: it checks that the whole path runs; its numbers are not results "
    "(too few steps and seeds: drop --smoke-test for a real sweep)"
)


def column_values(runs: pd.DataFrame, column: str) -> list[str]:
    """The distinct values the runs hold in ``column`` (none if no run has it), as text."""
    return sorted(runs[column].dropna().astype(str).unique()) if column in runs else []


def caveats(runs: pd.DataFrame, preset) -> str:
    """What a reader must know before taking the numbers below as results: a smoke test, tiny
    random networks or metric models."""
    notes = []
    if "true" in column_values(runs, f"tags.{SMOKE_TAG}"):
        steps = ", ".join(column_values(runs, "params.train.steps")) or "?"
        seeds = len(column_values(runs, "tags.distar.seed"))
        notes.append(
            f"**Smoke test: not results.** {steps} steps, {seeds} seeds a row: it "
            "checks that the whole path runs (a verdict needs 3+ seeds and a full run: "
            "drop --smoke-test)."
        )
    if preset.name.endswith("-tiny"):
        notes.append(
            f"**Tiny random networks** ({preset.name}: {preset.description}): the "
            "generator, reference and reward are untrained."
        )
    if "True" in column_values(runs, "params.eval.tiny_metrics"):
        notes.append(
            "**Tiny random metric models** (eval.tiny_metrics): every benchmark score "
            "comes from untrained tiny networks; alike or not, the rows' scores mean "
            "nothing."
        )
    return "\n\n".join(notes)


def paper_note(preset) -> str:
    """Under a table with the paper's columns: whose numbers they are."""
    on = "the paper's own model" if preset.name == "sdxl" else f"not this world ({preset.name})"
    return (
        f"*paper, SDXL*: the paper's Table 2 numbers (DI*-SDXL, Parti prompts) for the "
        f"setting a row stands for: {on}; shown for orientation."
    )


def units_line(runs: pd.DataFrame) -> str:
    """The units the runs recorded for their reward and CFG scales."""

    def recorded(tag: str) -> str:
        column = runs.get(f"tags.{tag}", pd.Series(dtype=str)).dropna()
        return ", ".join(sorted(column.unique())) or "not recorded"

    return (
        f"Units: reward r in {recorded(REWARD_UNITS_TAG)}; CFG scale in the "
        f"{recorded(CFG_CONVENTION_TAG)} convention (loss.cfg_convention; distar: "
        "D_c + a (D_c - D_null), diffusers' guidance w = 1 + a)."
    )


def add_paired_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        metavar="ROW",
        help="the row every other is paired against (default: the first "
        "Table-2 row the sweep ran, the init model when it ran)",
    )
    parser.add_argument(
        "--all-pairs",
        action="store_true",
        help="also pair every row with every other (Holm over all of them)",
    )
    add_min_effect_flag(parser)


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
    add_paired_flags(parser)
    args = parser.parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=(TrackingStoreError,))


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    check_writable_dir(args.out, "--out")
    runs = read_runs(args)
    outputs.watch(args.out)
    print(
        write_reports(
            runs,
            args.tracking_uri,
            args.out,
            args.baseline,
            args.all_pairs,
            min_effect=min_effect_of(args, world_of(runs)),
        ).text
    )
    print(
        f"\nwritten: {args.out / 'table2.md'}, {args.out / 'table2.csv'}, {args.out / 'pareto.png'}"
    )
    return 0


@dataclass
class Reports:
    """What :func:`write_reports` wrote: the printed text, Table 2 (one row per ablation row)
    and the paired comparisons (empty when the runs do not pair)."""

    text: str
    table: pd.DataFrame
    paired: pd.DataFrame
    metrics: tuple[str, ...]
    notes: str = ""  # :func:`caveats`


def min_effect_of(args: argparse.Namespace, world: str) -> dict[str, float]:
    """--min-effect, each metric one the world's preset reports per item (``eval/reward``)."""
    min_effect = parse_min_effect(args.min_effect)
    check_min_effect(min_effect, set(per_item_metrics(world_preset(world).metrics)))
    return min_effect


def write_reports(
    runs: pd.DataFrame,
    uri: str,
    out: Path,
    baseline: str | None = None,
    all_pairs: bool = False,
    world: str | None = None,
    min_effect: dict[str, float] | None = None,
) -> Reports:
    """Every report of a sweep written to ``out`` (Table 2 with each row's paired verdict,
    ``paired.md``, and on a text world the paper's Tables 1-3 in ``out/paper/``); ``world``:
    the preset the sweep ran (default: the world its runs logged, which cannot tell a tiny
    preset from its real one)."""
    preset = world_preset(world or world_of(runs))
    paired, comparisons = paired_report(
        runs, uri, out, preset.metrics, baseline, all_pairs, min_effect
    )
    notes, under = caveats(runs, preset), paper_note(preset)
    table = build_report(
        runs, out, preset.metrics, preset.pareto, verdicts(comparisons), notes, under
    )
    parts = [
        notes,
        to_markdown(table, preset.metrics),
        under,
        units_line(runs),
        f"## paired: each row minus the baseline "
        f"({comparisons.attrs.get('baseline', baseline) or 'none'}), same prompts and noise"
        f"\n\n{paired}",
    ]
    if any(c.startswith(("metrics.parti/", "metrics.coco/", "metrics.hps/")) for c in runs):
        # the paper's tables in a folder of their own: its table2 is not the sweep's Table 2
        for name, text in build(runs, out / "paper").items():
            parts.append(f"## {name} (ours beside the paper's, PickScore as a cosine)\n\n{text}")
    return Reports("\n\n".join(filter(None, parts)), table, comparisons, preset.metrics, notes)


DESCRIPTION_LIMIT = 7900  # MLflow keeps at most 8000 characters of a tag (a run's description)


def overview_markdown(
    reports: Reports, runs: pd.DataFrame, links: dict[str, str], headline: tuple[str, ...]
) -> str:
    """The parent run's description (MLflow renders it on the run's Overview): Table 2 with
    each row's seeds, the ``headline`` metrics' means ± 95 % CI and its paired verdict (few
    columns, so that row labels do not wrap), the units, and links to the full report (every
    metric, the paper's numbers)."""
    head = (
        "**Table 2** — mean ± 95 % CI over finished seeds; *paired*: the metrics a row "
        "beats (▲) or loses to (▼) the baseline on as a setting (over 3+ training seeds, "
        "each seed's paired mean on the same prompts and noise; Student-t, Holm-adjusted "
        "p < 0.05). Every metric and the paper's numbers: table2.md."
    )
    links_line = " · ".join(f"[{name}]({url})" for name, url in links.items())
    table = reports.table.drop(columns=[c for c in reports.table if c.startswith(PAPER_PREFIX)])
    text = "\n\n".join(
        filter(
            None,
            [
                head,
                reports.notes,
                to_markdown(table, headline),
                units_line(runs),
                f"Full report: {links_line}",
            ],
        )
    )
    if len(text) <= DESCRIPTION_LIMIT:
        return text
    return text[: DESCRIPTION_LIMIT - 40] + f"\n\n… (cut: see {links_line})"


def headline_cells(reports: Reports, headline: tuple[str, ...]) -> dict[str, str]:
    """Per Table-2 row (its label): the ``headline`` metrics' mean ± 95 % CI and its seeds, on
    one line -- a runs-table column, as MLflow's group rows show bare, unrounded means."""
    out = {}
    for _, r in reports.table.iterrows():
        shown = " · ".join(f"{m} {cell(r[m], r[f'{m}_ci95'])}" for m in headline if m in r)
        out[r["label"]] = f"{shown} ({r['seeds']} seeds)"
    return out


def row_key(label: str) -> str:
    """A row label as an MLflow metric-name part (letters, digits, ``_ - . /`` and spaces)."""
    return " ".join(re.sub(r"[^\w\-. ]", "", label).split())


def summary_metrics(reports: Reports) -> dict[str, float]:
    """Per row, its means (``<row>/<metric>``) and paired deltas to the baseline
    (``<row>/paired/<metric>``): the parent run's metrics, shown in the runs table."""
    out = {}
    for _, r in reports.table.iterrows():
        for m in reports.metrics:
            if m in r and pd.notna(r[m]):
                out[f"{row_key(r['label'])}/{m}"] = float(r[m])
    if not reports.paired.empty:
        baseline = reports.paired.attrs["baseline"]
        paired = reports.paired
        setting = paired[(paired["baseline"] == baseline) & (paired["level"] == "setting")]
        for _, r in setting.iterrows():
            if pd.isna(r.get("delta", math.nan)):  # did not pair: no delta
                continue
            out[f"{row_key(r['row'])}/paired/{r['metric']}"] = float(r["delta"])
    return out


if __name__ == "__main__":
    raise SystemExit(main())
