"""Sweep wall time against the summed time of its trials, read from a finished sweep's MLflow
runs. Prints the overhead ratios. Not a test.

    python benchmarks/sweep_overhead.py --tracking-uri sqlite:///runs/table2/mlflow.db \\
        --experiment distar-table2 --sweep table2 --max-concurrent 2

- wall: the parent run (Ray start, MLflow set-up, every trial, the report);
- trial time: each child run from creation to end (Ray Train start-up, world build, training,
  evaluation, logging);
- training time: ``time/train_seconds`` logged by the training loop (the loop alone).
``wall x concurrency / summed time`` is what running the trials one after another would have
saved; 1.0 would mean no overhead at all.
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--max-concurrent", type=int, default=2)
    args = p.parse_args()
    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.`distar.sweep` = '{args.sweep}'")
    parent = [r for r in runs if r.data.tags.get("distar.role") == "parent"][0]
    children = [r for r in runs if r.data.tags.get("distar.trial")]
    wall = (parent.info.end_time - parent.info.start_time) / 1000
    trial = sum((r.info.end_time - r.info.start_time) / 1000 for r in children)
    train = sum(r.data.metrics.get("time/train_seconds", float("nan")) for r in children)
    k = args.max_concurrent
    print(f"{len(children)} trials, up to {k} at a time")
    print(f"sweep wall time            {wall:8.1f} s")
    print(f"summed trial time          {trial:8.1f} s  (wall x {k} / sum: {wall * k / trial:.2f})")
    print(f"summed training-loop time  {train:8.1f} s  (wall x {k} / sum: {wall * k / train:.2f})")
    print(f"wall / summed training time {wall / train:8.2f}")


if __name__ == "__main__":
    main()
