"""Two runs (or two rows) compared item by item (prompt x image, same noise) on every benchmark
both scored, at two levels (:mod:`distar.track.paired`):

- setting: the rows as recipes, over training seeds (per-seed paired means, Student-t on
  S - 1 df; 3 seeds or more to decide anything);
- checkpoint: these trained runs on these items (items bootstrapped within seeds).

Each with its 95 % CI, p and Holm adjustment over the metrics shown, the per-sample share of
items A wins, the variance split, and the seeds and items per seed a decision would need.

    python -m analysis.compare --tracking-uri sqlite:///runs/sd/mlflow.db RUN_A RUN_B

A run is its MLflow run id or its run name ("10/7.5 DI*-In s0"); a row is its label
("DI*-In α_rew 10"): every finished seed of it, paired seed by seed with the other row's. The
first line printed says which side is A; every delta is A - B. Each
run's last evaluation is compared, and both sides' must be at the same step; items, steps,
seed columns or item counts that differ between the runs are refused in one line, never
dropped silently.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd

from analysis.paired_table import (
    Found,
    add_min_effect_flag,
    check_min_effect,
    checkpoint_table,
    p_text,
    parse_min_effect,
    plan_columns,
    run_sd,
    setting_table,
    verdict_mark,
)
from analysis.runs import check_store, finished
from distar.config import paper
from distar.config.benchmarks import ROW_KEYS, SET_METRICS, WORLD_ITEMS
from distar.config.tree import ConfigError
from distar.track import tracking
from distar.track.paired import MIN_SEEDS, item_metric
from distar.track.pairing import (
    UnpairedError,
    one_row_per_item,
    paired_differences,
    shared_seeds,
    stack_seeds,
)
from distar.track.tracking import TrackingStoreError, read_table
from distar.util.refusals import refusing

# the world's own per-sample values first (the embedded world's reward, precision, ...), then
# the text worlds' benchmarks
BENCHMARKS = (WORLD_ITEMS, "parti", "coco", "hps")


def seeds(runs: dict[str, str]) -> str:
    """How many runs a side is, for the line that names A and B."""
    return "1 run" if len(runs) == 1 else f"{len(runs)} runs, one per seed"


def find_runs(client, ref: str, flag: str) -> dict[str, str]:
    """Seed -> run id: one run (its id or its unique name) or a whole row (its label: every
    finished seed of it); refused naming the argument otherwise."""
    try:
        run = client.get_run(ref)
        return {run.data.tags.get("distar.seed", ""): run.info.run_id}
    except tracking.TRACKING_ERRORS:  # not a run id: a run name or a row label
        pass
    ids = [e.experiment_id for e in client.search_experiments()]
    quoted = ref.replace(chr(39), "")
    found = client.search_runs(ids, f"tags.`mlflow.runName` = '{quoted}'")
    if len(found) == 1:
        return {found[0].data.tags.get("distar.seed", ""): found[0].info.run_id}
    row = client.search_runs(ids, f"tags.`distar.label` = '{quoted}' and status = 'FINISHED'")
    seeds = {r.data.tags.get("distar.seed", ""): r.info.run_id for r in row}
    if len(found) > 1 or not seeds or len(seeds) < len(row):
        raise ConfigError(
            f"{flag}: {ref!r} names {len(found) or len(row)} runs; give a run id, "
            "a unique run name or a row label with one finished run per seed"
        )
    return seeds


def per_item_metrics(metrics: tuple[str, ...]) -> list[str]:
    """The preset metrics that have per-item values, by their per-item names (``eval/reward``,
    ``parti/imagereward``); a set metric (FID, MMD) has none."""
    return [item_metric(m) for m in metrics if m.rpartition("/")[2] not in SET_METRICS]


def samples(client, run_id: str, benchmark: str) -> pd.DataFrame | None:
    """The run's per-sample table of ``benchmark`` at its last evaluation (None: not scored)."""
    table = read_table(client, run_id, f"eval/{benchmark}_samples.json")
    if table is None:
        return None
    if "step" in table:
        table = table[table["step"] == table["step"].max()]
    return one_row_per_item(table)


def pair_rows(
    row: str, base: str, metric: str, a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]
) -> Found:
    """One comparison: ``row``'s per-seed tables (seed -> table) against ``base``'s on
    ``metric``, seed with seed, at the step each side was evaluated last (stated in ``steps``);
    what does not pair is a note naming the runs, not an error."""
    seeds, note = shared_seeds(set(a), set(b), (row, base))
    if not seeds:
        return Found(row, base, metric, None, None, note or "no seed in common")
    try:
        per_seed = {
            s: paired_differences(a[s], b[s], metric, (f"{row} seed {s}", f"{base} seed {s}"))
            for s in seeds
        }
        diffs, groups = stack_seeds(per_seed, (row, base))
    except UnpairedError as error:
        return Found(row, base, metric, None, None, str(error))
    return Found(row, base, metric, diffs, groups, note, steps_compared(a[seeds[0]], b[seeds[0]]))


def steps_compared(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """The evaluation steps a comparison pairs: ``600``, or ``600 vs 0`` against a model that
    was not trained."""
    steps = [str(t["step"].iloc[0]) if "step" in t else "?" for t in (a, b)]
    return steps[0] if steps[0] == steps[1] else " vs ".join(steps)


def comparisons(client, a: dict[str, str], b: dict[str, str], names=("A", "B")) -> list[Found]:
    """Every metric of every benchmark both sides scored: two runs pair directly; rows
    (seed -> run) pair seed with seed."""
    if len(a) == len(b) == 1:
        a, b = {"": next(iter(a.values()))}, {"": next(iter(b.values()))}
    out = []
    for bench in BENCHMARKS:
        tables_a = {s: samples(client, run, bench) for s, run in a.items()}
        tables_b = {s: samples(client, run, bench) for s, run in b.items()}
        if any(t is None for t in (*tables_a.values(), *tables_b.values())):
            continue
        tables = [*tables_a.values(), *tables_b.values()]
        shared = set.intersection(*(set(t.columns) for t in tables)) - set(ROW_KEYS)
        for metric in [c for c in tables[0].columns if c in shared]:  # every seed scored it
            found = pair_rows(*names, metric, tables_a, tables_b)
            out.append(replace(found, metric=f"{bench}/{metric}"))
    if not out:
        raise ConfigError("RUN_A RUN_B: no benchmark both runs scored (eval.benchmarks)")
    unpaired = [f.note for f in out if f.diffs is None]
    if unpaired:
        raise UnpairedError(unpaired[0])
    return out


def both_levels(
    found: list[Found], min_effect: dict[str, float] | None = None, n_boot: int = 2000
) -> pd.DataFrame:
    """The setting level (with its plan) and the checkpoint level of every comparison, one
    table with a ``level`` column."""
    setting = plan_columns(setting_table(found), found, min_effect)
    return pd.concat([setting, checkpoint_table(found, n_boot)], ignore_index=True)


def markdown(table: pd.DataFrame, with_rows: bool = False) -> str:
    """Both levels as markdown: the setting level (marks, plan) first, then the checkpoint
    level, each under a heading that says what it claims."""
    parts = []
    for level, title in (("setting", SETTING_TITLE), ("checkpoint", CHECKPOINT_TITLE)):
        part = table[table["level"] == level]
        if part.empty:
            continue
        head = (
            (["row", "vs"] if with_rows else [])
            + [
                "metric",
                "step",
                "delta",
                "95 % CI",
                "p",
                "p (Holm)",
                "seeds",
                "items/seed",
                "items A > B (per sample)",
            ]
            + (["plan (80 % power)"] if level == "setting" else [])
        )
        lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in part.iterrows():
            cells = [f"{r['row']}{verdict_mark(r)}", str(r["baseline"])] if with_rows else []
            mark = "" if with_rows else verdict_mark(r)  # with rows, the row cell holds it
            cells += [r["metric"] + mark, str(r.get("steps") or "–")] + number_cells(r)
            if level == "setting":
                cells.append(
                    str(r.get("plan", "–"))
                    + (
                        f"; at {r['min_effect']:g}: {r['plan_min_effect']}"
                        if r.get("plan_min_effect", "–") != "–"
                        else ""
                    )
                )
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    notes = sorted({n for n in table.get("note", pd.Series(dtype=str)).dropna() if n})
    return "\n\n".join([*parts, *(f"note: {n}" for n in notes)])


def number_cells(r: pd.Series) -> list[str]:
    if r["n_seeds"] == 0:  # did not pair
        return [f"– ({r['note']})", "–", "–", "–", "0", "–", "–"]
    ci = "–" if r["ci_low"] != r["ci_low"] else f"[{r['ci_low']:+.4g}, {r['ci_high']:+.4g}]"
    return [
        f"{r['delta']:+.4g}",
        ci,
        p_text(r["p"]),
        p_text(r["p_adj"]),
        str(int(r["n_seeds"])),
        str(int(r["n_items"])),
        f"{r['items_higher']:.2f}",
    ]


SETTING_TITLE = (
    "setting level: the rows as recipes, over training seeds (per-seed paired "
    f"means, Student-t on S - 1 df; marks from {MIN_SEEDS} seeds)"
)
CHECKPOINT_TITLE = (
    "checkpoint level: these trained runs on these items (items bootstrapped "
    "within prompt groups, the runs fixed; says nothing about another training "
    "run)"
)


def default_baseline(labels: set[str]) -> str:
    """The first Table-2 row the sweep ran (the init model when it did)."""
    for row in paper.TABLE2:
        if row.label in labels:
            return row.label
    return sorted(labels)[0]


def row_comparisons(
    client,
    runs: pd.DataFrame,
    metrics: list[str],
    baseline: str | None = None,
    all_pairs: bool = False,
    min_effect: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Every row of a sweep against ``baseline`` (or, ``all_pairs``, every row against every
    row before it in Table-2 order) on each per-item ``metric`` (``bench/m``), at both levels
    (:func:`both_levels`). Failed or unfinished seeds are left out, never imputed (the cell's
    note names them); a metric without per-item values (a set metric: MMD, FID) is skipped."""
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
        pairs += [(a, b) for i, b in enumerate(others) for a in others[i + 1 :]]
    cache: dict[tuple[str, str], pd.DataFrame | None] = {}

    def tables(label: str, bench: str, name: str) -> dict[str, pd.DataFrame]:
        out = {}
        for (lab, seed), run_id in by.items():
            if lab == label:
                if (run_id, bench) not in cache:
                    cache[run_id, bench] = samples(client, run_id, bench)
                if cache[run_id, bench] is not None and name in cache[run_id, bench]:
                    out[seed] = cache[run_id, bench]
        return out

    found = []
    for label, base in pairs:
        for metric in metrics:
            bench, _, name = metric.partition("/")
            a, b = tables(label, bench, name), tables(base, bench, name)
            if a and b:
                found.append(replace(pair_rows(label, base, name, a, b), metric=metric))
    table = both_levels(found, min_effect) if found else pd.DataFrame()
    table.attrs["baseline"] = baseline
    return table


def paired_report(
    runs: pd.DataFrame,
    uri: str,
    out: Path,
    metrics: tuple[str, ...],
    baseline: str | None = None,
    all_pairs: bool = False,
    min_effect: dict[str, float] | None = None,
) -> tuple[str, pd.DataFrame]:
    """``paired.md`` / ``paired.csv`` in ``out``: every row against the baseline (or every pair)
    on the preset's per-item metrics (the world's own, ``eval/<name>``, and the benchmarks'; a
    set metric such as FID or MMD has no per-item value), both levels; returns the markdown and
    the table (empty when the runs do not pair, the markdown then says why)."""
    per_item = per_item_metrics(metrics)
    out.mkdir(parents=True, exist_ok=True)
    try:
        table = row_comparisons(
            tracking.client(uri), runs, per_item, baseline, all_pairs, min_effect
        )
    except UnpairedError as error:  # the sweep ran: say why there is no table, do not fail it
        (out / "paired.md").write_text(f"no paired table: {error}\n")
        return f"no paired table: {error}", pd.DataFrame()
    if table.empty:
        text = "no paired table: no per-item values both rows recorded (eval/*_samples.json)"
        (out / "paired.md").write_text(text + "\n")
        return text, table
    table.to_csv(out / "paired.csv", index=False)
    sds = ", ".join(f"{m} {sd:.3g}" for m, sd in run_sd(table).items())
    text = "\n\n".join(
        [
            markdown(table, with_rows=True),
            LEGEND,
            f"run sd (a training run's mean around its setting's, from the "
            f"seeds; sweeps/search.py --stop-run-sd): {sds or '– (one seed)'}",
        ]
    )
    (out / "paired.md").write_text(text + "\n")
    return text, table


LEGEND = (
    f"▲ / ▼: the row beats / loses to the one it is compared with as a setting (over "
    f"training seeds, {MIN_SEEDS}+ of them) at Holm-adjusted p < 0.05; fewer seeds: no "
    "mark. items A > B: the per-sample share of items on which the row scores higher "
    "(ties half; not the chance that the setting is better). plan: the seeds (at these "
    "items per seed) or items per seed (at these seeds) for 80 % power at the effect seen, "
    "at the table's Bonferroni level; 'more seeds, not more prompts' when training runs "
    "differ more than any number of prompts can average out."
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_a", metavar="RUN_A", help="a run id, run name or row label")
    p.add_argument("run_b", metavar="RUN_B", help="the same, for the other side")
    p.add_argument("--tracking-uri", default="sqlite:///runs/table2/mlflow.db")
    add_min_effect_flag(p)
    args = p.parse_args(argv)

    def run(outputs) -> int:
        check_store(args.tracking_uri)
        client = tracking.client(args.tracking_uri)
        min_effect = parse_min_effect(args.min_effect)
        a, b = find_runs(client, args.run_a, "RUN_A"), find_runs(client, args.run_b, "RUN_B")
        found = comparisons(client, a, b, (args.run_a, args.run_b))
        check_min_effect(min_effect, {f.metric for f in found})
        print(
            f"A = {args.run_a!r} ({seeds(a)}), B = {args.run_b!r} ({seeds(b)}); each delta "
            "is A - B, 'items A > B' the share of items on which A scores higher\n"
        )
        print(markdown(both_levels(found, min_effect)))
        return 0

    return refusing(run, extra=(TrackingStoreError, ValueError))


if __name__ == "__main__":
    raise SystemExit(main())
