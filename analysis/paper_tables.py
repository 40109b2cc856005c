"""The paper's Tables 1-3 from a sweep's MLflow runs on a text-to-image world, with the paper's
own numbers beside ours in the same units (PickScore as the paper prints it, and as distar
logs it: the cosine).

- Table 1: per model (ablation row) on Parti and COCO: ImageReward, Aesthetic, PickScore, CLIP
  score (and FID on COCO); the paper's row for the same method beside it. A published FID is
  printed beside ours only when both were measured under the same protocol
  (``eval.fid_protocol``, column ``fid_protocol``): the DI* paper does not state its FID's, so
  its FIDs never are; under a DMD2 protocol DMD2's published FID of the init model is.
- Table 2: the ablation rows on Parti, the same metrics.
- Table 3: HPSv2.1 per style and their average.
Mean ± 95 % CI over the finished seeds only; a row with failed or unfinished seeds says so.

    python -m analysis.paper_tables --tracking-uri sqlite:///runs/sd/mlflow.db \\
        --experiment distar-table2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis.runs import (
    cell,
    column_title,
    published_value,
    read_runs,
    recorded_published,
    summarise,
)
from analysis.runs import finished as finished_mask
from distar.config import paper
from distar.config.benchmarks import FID_PROTOCOLS, PAPER_FID_PROTOCOL
from distar.track.tracking import TrackingStoreError
from distar.util.refusals import Outputs, check_writable_dir, refusing

# our metric name -> the paper's column (the same units: PickScore as the cosine, CLIP score
# as 100 x the cosine)
COLUMNS = {
    "imagereward": "image_reward",
    "aesthetic": "aesthetic",
    "pickscore": "pickscore",
    "clip_score": "clip_score",
    "fid": "coco_fid",
}
# our HPS style names -> the paper's Table 3 columns (paper.HPS_STYLES, in order)
HPS_STYLES = dict(
    zip(("anime", "concept-art", "paintings", "photo", "average"), paper.HPS_STYLES, strict=True)
)


def row_stats(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per ablation row and swept setting (as the Table-2 report groups them): finished seeds,
    failures, mean and CI of each MLflow metric."""
    return summarise(runs, tuple(columns), prefix="")


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Each row beside the paper's Table 1 model of the same method (its ``paper.method``)."""
    frames = []
    for bench in ("parti", "coco"):
        metrics = [m for m in COLUMNS if bench == "coco" or m != "fid"]
        stats = row_stats(runs, [f"{bench}/{m}" for m in metrics])
        for _, r in stats.iterrows():
            model = r[paper.METHOD] or ""
            published = paper.TABLE1.get((bench, model))
            rec = {
                "benchmark": bench,
                "row": r["label"],
                "seeds": r["seeds"],
                "failed": r["failed"],
                "paper_model": model,
            }
            for m in metrics:
                key = f"{bench}/{m}"
                rec[m] = cell(r.get(key, float("nan")), r.get(f"{key}_ci95", float("nan")))
                rec[f"paper_{m}"] = published_value(published, COLUMNS[m])
            if bench == "coco":
                rec["fid_protocol"], rec["paper_fid"] = same_protocol_fid(runs, r)
            frames.append(rec)
    return pd.DataFrame(frames)


def fid_protocol_of(runs: pd.DataFrame, label: str) -> str:
    """The ``eval.fid_protocol`` a row's runs recorded ("" torchmetrics on the benchmark's
    images; several values: the row mixes protocols, and nothing is comparable)."""
    column = "params.eval.fid_protocol"
    if column not in runs:
        return ""
    values = set(runs.loc[runs["tags.distar.label"] == label, column].fillna(""))
    return values.pop() if len(values) == 1 else "mixed"


def same_protocol_fid(runs: pd.DataFrame, row) -> tuple[str, float | None]:
    """(our protocol, the published FID measured the same way, or None). Never the paper's
    (FID_NOTE): no protocol of ours is the paper's."""
    ours = fid_protocol_of(runs, row["row"])
    protocol = FID_PROTOCOLS.get(ours)
    is_init = any(a.label == row["row"] and not a.trains for a in paper.TABLE2)
    name = ours or "torchmetrics (not a published protocol)"
    return name, (protocol.published_init if protocol and is_init else None)


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """The ablation rows on Parti beside the paper's Table 2 row of the same model and scales."""
    metrics = [m for m in COLUMNS if m != "fid"]
    stats = row_stats(runs, [f"parti/{m}" for m in metrics])
    rows = []
    for _, r in stats.iterrows():
        published = recorded_published(r)
        rec = {"row": r["label"], "seeds": r["seeds"], "failed": r["failed"]}
        for m in metrics:
            key = f"parti/{m}"
            rec[m] = cell(r.get(key, float("nan")), r.get(f"{key}_ci95", float("nan")))
            rec[f"paper_{m}"] = None if published is None else getattr(published, COLUMNS[m])
        rows.append(rec)
    return pd.DataFrame(rows)


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    stats = row_stats(runs, [f"hps/{s}" for s in HPS_STYLES])
    rows = []
    for _, r in stats.iterrows():
        published = paper.TABLE3.get(r[paper.METHOD] or "")
        rec = {"row": r["label"], "seeds": r["seeds"], "failed": r["failed"]}
        for i, ours in enumerate(HPS_STYLES):
            key = f"hps/{ours}"
            rec[ours] = cell(r.get(key, float("nan")), r.get(f"{key}_ci95", float("nan")))
            rec[f"paper_{ours}"] = None if published is None else published[i]
        rows.append(rec)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    head = [c for c in table.columns if c != "failed"]
    lines = ["| " + " | ".join(map(column_title, head)) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = []
        for c in head:
            v = r[c]
            if c == "seeds" and r.get("failed"):
                v = f"{v} ({r['failed']})"
            cells.append("–" if v is None or (isinstance(v, float) and pd.isna(v)) else f"{v}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_plot(runs: pd.DataFrame, path: Path, metric: str = "parti/pickscore") -> Path | None:
    """Per-category means of one metric, one bar group per category, one bar per row."""
    columns = [c for c in runs.columns if c.startswith(f"metrics.{metric}/")]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = runs[finished_mask(runs)]
    means = done.groupby("tags.distar.label")[columns].mean()
    means.columns = [c.removeprefix(f"metrics.{metric}/") for c in columns]
    ax = means.T.plot.bar(figsize=(10, 4.5), width=0.8)
    ax.set(ylabel=metric, title=f"{metric} per category (mean over finished seeds)")
    ax.legend(fontsize=7)
    plt.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(path, dpi=110)
    plt.close()
    return path


FID_NOTE = (
    f"paper_fid: a published FID measured under our fid_protocol only. The DI* paper's Table 1 "
    f"FIDs ({PAPER_FID_PROTOCOL}) are never printed beside ours."
)


# the benchmarks each table reads, and how a run gets them (an empty table says so)
BENCHMARKS = {"table1": ("parti", "coco"), "table2": ("parti",), "table3": ("hps",)}
HOW = {
    "parti": "eval.benchmarks=parti:N",
    "coco": "eval.benchmarks=coco:N",
    "hps": "eval.benchmarks=hps:N, with DISTAR_HPS_PROMPTS or eval.prompts=hps=DIR: "
    "the HPSv2 prompts are not shipped",
}


def empty_because(name: str, runs: pd.DataFrame) -> str | None:
    """Why a table has none of our numbers (None: it has some): no run logged its benchmarks."""
    benches = BENCHMARKS[name]
    if any(c.startswith(tuple(f"metrics.{b}/" for b in benches)) for c in runs):
        return None
    return (
        f"No numbers of ours: no run logged {' or '.join(f'{b}/*' for b in benches)} "
        f"(add {'; '.join(HOW[b] for b in benches)})."
    )


def build(runs: pd.DataFrame, out: Path) -> dict[str, str]:
    """Write table{1,2,3}.md / .csv and the per-category plot; returns the markdown (a table
    none of whose benchmarks ran says why instead of printing dashes)."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {"table1": table1(runs), "table2": table2(runs), "table3": table3(runs)}
    texts = {}
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        texts[name] = empty_because(name, runs) or (
            markdown(table) + (f"\n\n{FID_NOTE}" if name == "table1" else "")
        )
        (out / f"{name}.md").write_text(texts[name] + "\n")
    category_plot(runs, out / "parti_categories.png")
    return texts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.paper_tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tracking-uri", default="sqlite:///runs/table2/mlflow.db")
    p.add_argument("--experiment", default="distar-table2")
    p.add_argument("--sweep", help="only runs of this sweep name")
    p.add_argument("--out", type=Path, default=Path("runs/report"))
    args = p.parse_args(argv)

    def run(outputs: Outputs) -> int:
        check_writable_dir(args.out, "--out")
        runs = read_runs(args)
        outputs.watch(args.out)
        for name, text in build(runs, args.out).items():
            print(f"\n## {name}\n\n{text}")
        return 0

    return refusing(run, extra=(TrackingStoreError,))


if __name__ == "__main__":
    raise SystemExit(main())
