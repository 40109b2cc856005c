"""What a sweep shows in MLflow's UI: the experiment's description, the report on the sweep's
parent run (its Overview, artifacts and per-row metrics), each child run's row verdict and row
CI, the shared runs-table view a grid's link opens, and the links a sweep prints. The entry
points (``sweeps/``) build the report and print these lines; this module writes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distar.config.benchmarks import logged_name
from distar.config.sections import WorldPreset
from distar.raytune.settings import SweepSettings
from distar.raytune.tuner import parent_run_id
from distar.track import tracking

EXPERIMENT_NOTE = """**distar: Diff-Instruct\\* sweeps.** One child run per (Table-2 row, seed),
tagged distar.label (the row) and distar.seed, named by what tells it apart: the paper's
alpha_rew/alpha_cfg, the method, the seed ("100/7.5 DI*-In s0"); one parent run per sweep,
named after it, whose Overview holds Table 2 (mean ± 95 % CI over finished seeds) with each
row's paired verdict against the baseline row as a setting (▲ beats, ▼ loses: over 3+
training seeds, each seed's paired mean on the same prompts and noise, Student-t, Holm-adjusted
p < 0.05; fewer seeds: no verdict), and whose artifacts hold the report (table2.md, paired.md
with the setting and checkpoint levels and what a decision needs, pareto.png and their CSVs).

Metrics: eval/NAME are the world's own; parti/..., coco/..., hps/... the benchmarks' (their
bootstrap CIs: artifact eval/BENCH_ci95.json). A parent run's ROW/METRIC are its rows' means
and ROW/paired/METRIC their paired differences to the baseline. Params paper.alpha_rew and
paper.alpha_cfg are the paper's values a row stands for; loss.* are those in the world's units.
One scale per metric: PickScore (*/pickscore) is the cosine the paper prints, CLIP score 100 x
the cosine.

{units}

Start from the link a sweep prints: its runs grouped by row (tag distar.group: the row, and its
c when the grid crosses pseudo-Huber c; group rows show the seeds' mean), sorted by the
objective."""


def serving(uri: str) -> tuple[str, list[str]]:
    """The UI's address for ``uri``, and the line that says how to serve it (none when the
    store is a server already)."""
    server, command = tracking.ui_server(uri)
    return server, [f"MLflow: {command}, then"] if command else []


def log_sweep_report(
    settings: SweepSettings,
    report_dir: Path,
    params: dict[str, Any],
    overview: Callable[[str, str], str] | None = None,
    metrics: dict[str, float] | None = None,
) -> str | None:
    """The sweep's report (tables, CSV, plots) and its own parameters on the parent run, with
    ``overview(experiment_id, run_id)`` as its description (the run's Overview page) and
    ``metrics`` (per-row summaries); returns the parent run id."""
    run_id = parent_run_id(settings)
    if run_id is None:
        return None
    client = tracking.client(settings.uri())
    tracking.log_params(client, run_id, params)
    client.log_artifacts(run_id, str(report_dir), "report")
    if overview is not None:
        experiment = client.get_run(run_id).info.experiment_id
        client.set_tag(run_id, tracking.NOTE_TAG, overview(experiment, run_id))
    if metrics:
        tracking.log_metrics(client, run_id, metrics, 0)
    return run_id


def tag_rows(uri: str, runs, verdicts: dict[str, str], cells: dict[str, str]) -> None:
    """Each child run (a row of ``runs``, the report's frame) tagged with its row's paired
    verdict and its row's headline mean +- CI: every seed's line in the runs table says them."""
    client = tracking.client(uri)
    for _, run in runs.iterrows():
        label = run["tags.distar.label"]
        client.set_tag(run["run_id"], tracking.PAIRED_TAG, verdicts.get(label, "–"))
        group = run.get(f"tags.{tracking.GROUP_TAG}") or label
        client.set_tag(run["run_id"], tracking.ROW_CI_TAG, cells.get(group, "–"))


def grid_view(
    settings: SweepSettings, preset: WorldPreset, parent: str | None, units: str
) -> list[str]:
    """The experiment's description, and the lines to print: the link that opens the runs
    table on the answer (this sweep's runs grouped by row, each with its row's paired verdict,
    the preset's metrics, sorted by its objective) and the parent run's (Table 2 with the
    paired verdicts in its Overview)."""
    uri = settings.uri()
    client = tracking.client(uri)
    experiment = client.get_experiment_by_name(settings.experiment).experiment_id
    client.set_experiment_tag(experiment, tracking.NOTE_TAG, EXPERIMENT_NOTE.format(units=units))
    key = f"distar-{settings.name}"
    children = (
        f"tags.`{tracking.SWEEP_TAG}` = '{settings.name}' and tags.`{tracking.TRIAL_TAG}` != ''"
    )
    # the verdict, then the objective and its floor metric, then the preset's other metrics
    # (the table scrolls sideways to them); the run-name column wide enough for a row's label
    metrics = [logged_name(m) for m in dict.fromkeys([*preset.objective, *preset.metrics])]
    tags = (tracking.ROW_CI_TAG, tracking.PAIRED_TAG)
    widths = {
        tracking.RUN_NAME_COLUMN: 330,
        f"tags.`{tracking.ROW_CI_TAG}`": 470,
        f"tags.`{tracking.PAIRED_TAG}`": 190,
        **{f"metrics.`{m}`": 125 for m in metrics},
    }
    tracking.share_runs_view(
        client, experiment, key, children, metrics, tracking.GROUP_TAG, metrics[0], tags, widths
    )
    server, lines = serving(uri)
    lines.append(
        f"MLflow: {tracking.runs_view_url(server, experiment, key)}  (runs grouped by "
        f"row, sorted by {preset.objective[0]}, each with its row's paired verdict)"
    )
    if parent:
        lines.append(
            f"MLflow: {tracking.run_url(server, experiment, parent)}  (the sweep's "
            "run: Table 2 and the paired verdicts)"
        )
    return lines


def search_links(settings: SweepSettings) -> list[str]:
    """Where to see a search in MLflow: its experiment's runs, and the search's own run (its
    trials nested under it)."""
    found = tracking.client(settings.uri()).get_experiment_by_name(settings.experiment)
    if found is None:
        return []
    experiment = found.experiment_id
    server, lines = serving(settings.uri())
    lines.append(f"MLflow: {tracking.mlflow_ui_url(server, experiment)}  (the experiment's runs)")
    if parent := parent_run_id(settings):
        lines.append(
            f"MLflow: {tracking.run_url(server, experiment, parent)}  (the search's "
            "run, its trials under it)"
        )
    return lines
