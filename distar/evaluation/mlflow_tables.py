"""Benchmark results into an MLflow run: per-sample and per-group tables, summary metrics and
their CIs, an image grid. Explicit client + run id (works from any process, no global active
run)."""

from __future__ import annotations

from distar.evaluation.harness import BenchmarkResult
from distar.evaluation.summary import CI_PREFIX, ci_table, group_table
from distar.runtime.records import grid_file
from distar.track.tracking import log_metrics, log_table
from distar.util.images import image_grid


def log_benchmark(client, run_id: str, result: BenchmarkResult, step: int = 0) -> None:
    bench = result.benchmark
    if result.prompts_source:  # which file: a shipped sample and the full file differ
        client.set_tag(run_id, f"distar.prompts.{bench}", result.prompts_source)
    log_table(client, run_id, result.rows, f"eval/{bench}_samples.json")
    if result.rows["group"].nunique() > 1:
        table = group_table(result.rows, result.metric_columns)
        log_table(client, run_id, table, f"eval/{bench}_groups.json")
    # each metric's CI as a table row (eval/<bench>_ci95.json), not two more charts per metric
    # ahead of the metrics themselves in the run's chart list ("ci95" sorts first)
    summary = {k: v for k, v in result.summary.items() if not k.startswith(CI_PREFIX)}
    log_metrics(client, run_id, summary, step)
    bounds = ci_table(result.summary, bench, result.metric_columns).assign(step=step)
    log_table(client, run_id, bounds, f"eval/{bench}_ci95.json")
    if result.grid is not None:  # drawn by the run's rank 0, named by grid_file
        client.log_artifact(run_id, str(result.grid), "eval")
    elif result.examples.ndim == 4 and result.examples.shape[1] == 3:
        artifact = f"eval/{grid_file(bench, step)}"
        client.log_image(run_id, image_grid(result.examples), artifact_file=artifact)
