"""Two runs (or two rows) compared unit by unit (prompt x image, same noise) on every benchmark
both scored: the mean difference A - B per metric with a paired bootstrap 95 % CI (units
resampled within their prompt / Parti category / HPS style), a p-value and its Holm adjustment
across the rows shown, the probability that A beats B on a unit, and how many units a decision
would need.

    python -m analysis.compare --tracking-uri sqlite:///runs/sd/mlflow.db RUN_A RUN_B

A run is its MLflow run id or its run name ("DI*-In α_rew 10 · seed 0"); a row is its label
("DI*-In α_rew 10"): every finished seed of it, paired seed by seed with the other row's and
stacked. Each run's last evaluation is used; units that differ between the runs (another
subset, image count or ``eval.seed``) are refused, never dropped silently.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import check_store, finished
from distar import paper
from distar.benchmark_catalogue import ROW_KEYS, WORLD_UNITS, lower_is_better
from distar.config import ConfigError
from distar.paired import (
    Paired,
    UnpairedError,
    compare,
    holm,
    one_row_per_unit,
    paired_differences,
    unit_metric,
)
from distar.refusals import refusing
from distar.tracking import TrackingStoreError, read_table

# the world's own per-sample values first (the embedded world's reward, precision, ...), then
# the text worlds' benchmarks
BENCHMARKS = (WORLD_UNITS, "parti", "coco", "hps")


def find_runs(client, ref: str, flag: str) -> dict[str, str]:
    """Seed -> run id: one run (its id or its unique name) or a whole row (its label: every
    finished seed of it); refused naming the argument otherwise."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(ref)
        return {run.data.tags.get("distar.seed", ""): run.info.run_id}
    except MlflowException:
        pass
    ids = [e.experiment_id for e in client.search_experiments()]
    quoted = ref.replace(chr(39), "")
    found = client.search_runs(ids, f"tags.`mlflow.runName` = '{quoted}'")
    if len(found) == 1:
        return {found[0].data.tags.get("distar.seed", ""): found[0].info.run_id}
    row = client.search_runs(ids, f"tags.`distar.label` = '{quoted}' and status = 'FINISHED'")
    seeds = {r.data.tags.get("distar.seed", ""): r.info.run_id for r in row}
    if len(found) > 1 or not seeds or len(seeds) < len(row):
        raise ConfigError(f"{flag}: {ref!r} names {len(found) or len(row)} runs; give a run id, "
                          "a unique run name or a row label with one finished run per seed")
    return seeds


def samples(client, run_id: str, benchmark: str) -> pd.DataFrame | None:
    """The run's per-sample table of ``benchmark`` at its last evaluation (None: not scored)."""
    table = read_table(client, run_id, f"eval/{benchmark}_samples.json")
    if table is None:
        return None
    if "step" in table:
        table = table[table["step"] == table["step"].max()]
    return one_row_per_unit(table)


def comparisons(client, a: dict[str, str], b: dict[str, str]) -> list[tuple[str, Paired]]:
    """(benchmark, comparison) for every metric of every benchmark both sides scored: two runs
    pair directly; rows (seed -> run) pair within each seed both finished, seeds stacked."""
    pairs = [(next(iter(a.values())), next(iter(b.values())))] if len(a) == len(b) == 1 else [
        (a[seed], b[seed]) for seed in sorted(a.keys() & b.keys())]  # fmt: skip
    if not pairs:
        raise ConfigError("RUN_A RUN_B: the rows share no finished seed")
    out = []
    for bench in BENCHMARKS:
        tables = [(samples(client, x, bench), samples(client, y, bench)) for x, y in pairs]
        if any(x is None or y is None for x, y in tables):
            continue
        for metric in [c for c in tables[0][0].columns if c not in ROW_KEYS
                       and c in tables[0][1].columns]:  # fmt: skip
            per_seed = [paired_differences(x, y, metric) for x, y in tables]
            diffs = np.stack([d["diff"].to_numpy() for d in per_seed])
            out.append((bench, compare(diffs, per_seed[0]["group"].to_numpy(),
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
                     f"{p_text(c.p)} | {p_text(p_adj)} | {c.prob_improvement:.2f} | {c.n_units} | "
                     f"{c.n_seeds} | {needed} |")  # fmt: skip
    return "\n".join(lines)


def default_baseline(labels: set[str]) -> str:
    """The first Table-2 row the sweep ran (the init model when it did)."""
    for row in paper.TABLE2:
        if row.label in labels:
            return row.label
    return sorted(labels)[0]


def row_comparisons(client, runs: pd.DataFrame, metrics: list[str], baseline: str | None = None,
                    all_pairs: bool = False) -> pd.DataFrame:  # fmt: skip
    """Every row of a sweep against ``baseline`` (or, ``all_pairs``, every row against every
    row before it in Table-2 order) on each per-unit ``metric`` (``bench/m``), paired unit by
    unit within each seed both finished, the seeds stacked; Holm-adjusted over the table.
    Failed or unfinished seeds are left out, never imputed; a metric without per-unit values
    (a set metric: MMD, FID) is skipped."""
    done = runs[finished(runs)]
    by = {(r["tags.distar.label"], r["tags.distar.seed"]): r["run_id"] for _, r in done.iterrows()}
    if len(by) < len(done):
        raise UnpairedError(
            "a row has several runs per seed (a swept setting such as --huber-c): compare two "
            "runs with python -m analysis.compare"
        )
    labels = sorted({label for label, _ in by}, key=paper.row_order)
    if baseline is not None and baseline not in labels:
        raise ConfigError(f"--baseline: {baseline!r} is not a row of this sweep ({labels})")
    baseline = baseline or default_baseline(set(labels))
    others = [label for label in labels if label != baseline]
    pairs = [(label, baseline) for label in others]
    if all_pairs:
        pairs += [(a, b) for i, b in enumerate(others) for a in others[i + 1:]]
    tables: dict[tuple[str, str], pd.DataFrame | None] = {}

    def table(run_id: str, bench: str) -> pd.DataFrame | None:
        if (run_id, bench) not in tables:
            tables[run_id, bench] = samples(client, run_id, bench)
        return tables[run_id, bench]

    def seeds_of(label: str) -> set[str]:
        return {s for lab, s in by if lab == label}

    found = []
    for label, base in pairs:
        for metric in metrics:
            bench, _, name = metric.partition("/")
            per_seed = []
            for seed in sorted(seeds_of(label) & seeds_of(base)):
                a, b = table(by[label, seed], bench), table(by[base, seed], bench)
                if a is not None and b is not None and name in a and name in b:
                    per_seed.append(paired_differences(a, b, name))
            if per_seed:  # the same units in every seed (eval.seed fixes the noise), in order
                diffs = np.stack([d["diff"].to_numpy() for d in per_seed])
                found.append((label, base, compare(diffs, per_seed[0]["group"].to_numpy(),
                                                   metric)))  # fmt: skip
    adjusted = holm([c.p for _, _, c in found])
    table = pd.DataFrame([{"row": label, "baseline": base, **asdict(c), "p_adj": p_adj}
                          for (label, base, c), p_adj in zip(found, adjusted, strict=True)])
    table.attrs["baseline"] = baseline
    return table


def paired_report(runs: pd.DataFrame, uri: str, out: Path, metrics: tuple[str, ...],
                  baseline: str | None = None,
                  all_pairs: bool = False) -> tuple[str, pd.DataFrame]:  # fmt: skip
    """``paired.md`` / ``paired.csv`` in ``out``: every row against the baseline (or every pair)
    on the preset's per-unit metrics (the world's own, ``eval/<name>``, and the benchmarks'; a
    set metric such as FID or MMD has no per-unit value); returns the markdown and the table
    (empty when the runs do not pair, the markdown then says why)."""
    from mlflow.tracking import MlflowClient

    per_unit = [unit_metric(m) for m in metrics if not m.endswith("fid")]
    out.mkdir(parents=True, exist_ok=True)
    try:
        table = row_comparisons(MlflowClient(uri), runs, per_unit, baseline, all_pairs)
    except UnpairedError as error:  # the sweep ran: say why there is no table, do not fail it
        (out / "paired.md").write_text(f"no paired table: {error}\n")
        return f"no paired table: {error}", pd.DataFrame()
    if table.empty:
        text = "no paired table: no per-unit values both rows recorded (eval/*_samples.json)"
        (out / "paired.md").write_text(text + "\n")
        return text, table
    table.to_csv(out / "paired.csv", index=False)
    head = ["row", "vs", "metric", "delta", "95 % CI", "p", "p (Holm)", "P(row > vs)",
            "units x seeds", "units needed"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        needed = "–" if r["units_needed"] < 0 else str(r["units_needed"])
        lines.append(f"| {r['row']}{verdict_mark(r)} | {r['baseline']} | {r['metric']} | "
                     f"{r['delta']:+.4g} | [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}] | "
                     f"{p_text(r['p'])} | {p_text(r['p_adj'])} | {r['prob_improvement']:.2f} | "
                     f"{r['n_units']} x {r['n_seeds']} | {needed} |")  # fmt: skip
    text = "\n".join(lines) + (
        "\n\n▲ / ▼: the row beats / loses to the one it is compared with at Holm-adjusted "
        "p < 0.05 (paired bootstrap over units within their group, and over seeds). units "
        "needed: the units at which the 95 % CI would exclude 0 for this effect and spread "
        "(size the next sweep with eval.samples_per_prompt or eval.benchmarks=parti:N)."
    )
    (out / "paired.md").write_text(text + "\n")
    return text, table


def p_text(p: float) -> str:
    """A p-value as printed: a normal tail far out is no more precise than "< 1e-6"."""
    return "< 1e-6" if p < 1e-6 else f"{p:.3g}"


def verdict_mark(r: pd.Series) -> str:
    """`` ▲`` / `` ▼`` where a comparison is significant after Holm, by the metric's sense."""
    if r["p_adj"] >= 0.05:
        return ""
    better = (r["delta"] < 0) if lower_is_better(r["metric"]) else (r["delta"] > 0)
    return " ▲" if better else " ▼"


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Per row, its significant comparisons with the baseline (``▲ eval/reward, ...``), for the
    Table-2 report and the runs' ``distar.paired`` tags; the baseline row says so."""
    if table.empty:
        return {}
    baseline = table.attrs["baseline"]
    out = {baseline: "baseline"}
    for row, group in table[table["baseline"] == baseline].groupby("row"):
        # the mark first: a narrow table cell cut after a few characters still shows it
        marks = [f"{verdict_mark(r).strip()} {r['metric']}" for _, r in group.iterrows()
                 if verdict_mark(r)]  # fmt: skip
        out[str(row)] = ", ".join(marks) or "n.s. (no significant difference)"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run_a", metavar="RUN_A", help="a run id, run name or row label")
    p.add_argument("run_b", metavar="RUN_B", help="the same, for the other side")
    p.add_argument("--tracking-uri", default="sqlite:///runs/table2/mlflow.db")
    args = p.parse_args(argv)

    def run(outputs) -> int:
        from mlflow.tracking import MlflowClient
        check_store(args.tracking_uri)
        client = MlflowClient(args.tracking_uri)
        a, b = find_runs(client, args.run_a, "RUN_A"), find_runs(client, args.run_b, "RUN_B")
        print(markdown(comparisons(client, a, b)))
        return 0

    return refusing(run, extra=(TrackingStoreError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
