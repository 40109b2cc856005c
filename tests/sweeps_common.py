"""What the sweep tests share: tiny trials and running them through Ray into MLflow."""

from __future__ import annotations

import pandas as pd

from distar.config.paper import TABLE2
from distar.config.tree import Config
from distar.raytune.grid import expand
from distar.raytune.spec import TrialSpec
from distar.runtime.local_ray import free_port  # noqa: F401  (the tests' ports, as Ray's)

TINY = {
    "train.steps": 6,
    "train.batch_size": 32,
    "train.log_every": 3,
    "eval.samples_per_prompt": 60,
    "world.stage0_steps": 50,
    "world.generator_width": 32,
    "world.assistant_width": 32,
    "world.depth": 2,
}


def tiny_trials(rows=(TABLE2[1],), seeds=(0, 1), **flat) -> list[TrialSpec]:
    return expand(tuple(rows), Config().with_overrides({**TINY, **flat}), list(seeds))


def run(trials, tmp_path, name="t", uri=None, resume=False):
    from distar.raytune.settings import SweepSettings
    from distar.raytune.tuner import run_sweep

    return run_sweep(trials, SweepSettings(name, "exp", tmp_path, uri, 2, resume))


def child_runs(uri: str, sweep: str) -> pd.DataFrame:
    from analysis.runs import load_runs

    return load_runs(uri, "exp", sweep)
