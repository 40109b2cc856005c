"""Two runs compared unit by unit (prompt x image, same noise) on every benchmark both scored:
the mean difference A - B per metric with a paired bootstrap 95 % CI (units resampled within
their Parti category / HPS style), a p-value and its Holm adjustment across the rows shown, the
probability that A beats B on a unit, and how many units a decision would need.

    python -m analysis.compare --tracking-uri sqlite:///runs/sd/mlflow.db RUN_A RUN_B

A run is its MLflow run id or its run name ("DI*-In α_rew 10 · seed 0"). Each run's last
evaluation is used; units that differ between the runs (another subset, image count or
``eval.seed``) are refused, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.paired import Paired, UnpairedError, compare, holm, paired_differences
from analysis.runs import check_store, finished
from distar import paper
from distar.benchmark_catalogue import ROW_KEYS
from distar.config import ConfigError
from distar.refusals import refusing
from distar.tracking import TrackingStoreError

BENCHMARKS = ("parti", "coco", "hps")


def find_run(client, ref: str) -> str:
    """A run id, or the one run carrying that name; refused naming the argument otherwise."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref).info.run_id
    except MlflowException:
        pass
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, f"tags.`mlflow.runName` = '{ref.replace(chr(39), '')}'")
    if len(found) != 1:
        raise ConfigError(f"RUN: {ref!r} names {len(found)} runs; give a run id or a unique name")
    return found[0].info.run_id


def samples(client, run_id: str, benchmark: str) -> pd.DataFrame | None:
    """The run's per-sample table of ``benchmark`` at its last evaluation (None: not scored)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a clean stderr
    path = f"eval/{benchmark}_samples.json"
    if path not in {a.path for a in client.list_artifacts(run_id, "eval")}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
    table = pd.DataFrame(data["data"], columns=data["columns"])
    return table[table["step"] == table["step"].max()] if "step" in table else table


def comparisons(client, run_a: str, run_b: str) -> list[tuple[str, Paired]]:
    """(benchmark, comparison) for every metric of every benchmark both runs scored."""
    out = []
    for bench in BENCHMARKS:
        a, b = samples(client, run_a, bench), samples(client, run_b, bench)
        if a is None or b is None:
            continue
        for metric in [c for c in a.columns if c not in ROW_KEYS and c in b.columns]:
            diffs = paired_differences(a, b, metric)
            out.append((bench, compare(diffs["diff"].to_numpy(), diffs["group"].to_numpy(),
                                       f"{bench}/{metric}")))  # fmt: skip
    if not out:
        raise ConfigError("RUN_A RUN_B: no benchmark both runs scored (eval.benchmarks)")
    return out


def markdown(found: list[tuple[str, Paired]]) -> str:
    adjusted = holm([c.p for _, c in found])
    head = ["metric", "delta (A - B)", "95 % CI", "p", "p (Holm)", "P(A > B)", "units", "seeds",
            "units needed"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (_, c), p_adj in zip(found, adjusted, strict=True):
        needed = "–" if c.units_needed < 0 else str(c.units_needed)
        lines.append(f"| {c.metric} | {c.delta:+.4f} | [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | "
                     f"{c.p:.3g} | {p_adj:.3g} | {c.prob_improvement:.2f} | {c.n_units} | "
                     f"{c.n_seeds} | {needed} |")  # fmt: skip
    return "\n".join(lines)


def default_baseline(labels: set[str]) -> str:
    """The first Table-2 row the sweep ran (the init model when it did)."""
    for row in paper.TABLE2:
        if row.label in labels:
            return row.label
    return sorted(labels)[0]


def row_comparisons(client, runs: pd.DataFrame, metrics: list[str],
                    baseline: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Every row of a sweep against ``baseline`` on each benchmark ``metric`` (``bench/m``),
    paired unit by unit within each seed both finished, the seeds stacked; Holm-adjusted over
    the table. Failed or unfinished seeds are left out, never imputed."""
    done = runs[finished(runs)]
    by = {(r["tags.distar.label"], r["tags.distar.seed"]): r["run_id"] for _, r in done.iterrows()}
    if len(by) < len(done):
        raise UnpairedError(
            "a row has several runs per seed (a swept setting such as --huber-c): compare two "
            "runs with python -m analysis.compare"
        )
    labels = {label for label, _ in by}
    baseline = baseline or default_baseline(labels)
    tables: dict[tuple[str, str], pd.DataFrame | None] = {}

    def table(run_id: str, bench: str) -> pd.DataFrame | None:
        if (run_id, bench) not in tables:
            tables[run_id, bench] = samples(client, run_id, bench)
        return tables[run_id, bench]

    def seeds_of(label: str) -> set[str]:
        return {s for lab, s in by if lab == label}

    found = []
    for label in sorted(labels - {baseline}, key=paper.row_order):
        for metric in metrics:
            bench, _, name = metric.partition("/")
            per_seed = [
                paired_differences(table(by[label, s], bench), table(by[baseline, s], bench), name)
                for s in sorted(seeds_of(label) & seeds_of(baseline))
            ]
            if per_seed:  # the same units in every seed (eval.seed fixes the noise), in order
                diffs = np.stack([d["diff"].to_numpy() for d in per_seed])
                found.append((label, compare(diffs, per_seed[0]["group"].to_numpy(), metric)))
    adjusted = holm([c.p for _, c in found])
    return pd.DataFrame([{"row": label, "baseline": baseline, **asdict(c), "p_adj": p_adj}
                         for (label, c), p_adj in zip(found, adjusted, strict=True)])  # fmt: skip


def paired_report(runs: pd.DataFrame, uri: str, out: Path, metrics: tuple[str, ...]) -> str:
    """``paired.md`` / ``paired.csv`` in ``out``: every row against the baseline on the
    preset's per-sample benchmark metrics (FID has no per-unit value); returns the markdown."""
    from mlflow.tracking import MlflowClient

    per_unit = [m for m in metrics if "/" in m and not m.endswith("/fid")]
    try:
        table = row_comparisons(MlflowClient(uri), runs, per_unit)
    except UnpairedError as error:  # the sweep ran: say why there is no table, do not fail it
        (out / "paired.md").write_text(f"no paired table: {error}\n")
        return f"no paired table: {error}"
    table.to_csv(out / "paired.csv", index=False)
    lines = ["| row | metric | delta vs " + (table["baseline"].iloc[0] if len(table) else "–")
             + " | 95 % CI | p (Holm) | P(better) | units x seeds | units needed |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, r in table.iterrows():
        mark = " *" if r["p_adj"] < 0.05 else ""
        needed = "–" if r["units_needed"] < 0 else str(r["units_needed"])
        units = f"{r['n_units']} x {r['n_seeds']}"
        lines.append(f"| {r['row']}{mark} | {r['metric']} | {r['delta']:+.4f} | "
                     f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_adj']:.3g} | "
                     f"{r['prob_improvement']:.2f} | {units} | {needed} |")  # fmt: skip
    text = "\n".join(lines) + "\n\n* differs from the baseline at Holm-adjusted p < 0.05"
    (out / "paired.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument("--tracking-uri", default="sqlite:///runs/table2/mlflow.db")
    args = p.parse_args(argv)

    def run(outputs) -> int:
        from mlflow.tracking import MlflowClient
        check_store(args.tracking_uri)
        client = MlflowClient(args.tracking_uri)
        run_a, run_b = find_run(client, args.run_a), find_run(client, args.run_b)
        print(markdown(comparisons(client, run_a, run_b)))
        return 0

    return refusing(run, extra=(TrackingStoreError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
