"""A searched sweep: Optuna (through Tune's OptunaSearch) over reward scale, CFG scale,
pseudo-Huber c and guidance mode, with ASHA stopping weak trials at evaluation rungs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from distar.config import Config
from distar.sweep.trial import SweepContext, TrialSpec


def search_space(
    base: Config,
    seed: int,
    reward: tuple[float, float],
    cfg: tuple[float, float],
    huber_c: tuple[float, float],
):
    """``space(ctx)`` for :func:`distar.sweep.runner.run_sweep`: the base config with four
    searched leaves; Tune samples them, the driver validates the result as a Config."""
    from ray import tune

    flat: dict[str, Any] = {**base.to_flat(), "train.seed": seed}
    flat["loss.reward_scale"] = tune.loguniform(*reward)
    flat["loss.cfg_scale"] = tune.uniform(*cfg)
    flat["loss.huber_c"] = tune.loguniform(*huber_c)
    flat["loss.guidance"] = tune.choice(["in", "out"])

    def space(ctx: SweepContext) -> dict[str, Any]:
        return {"trial": asdict(TrialSpec("", "search", seed, flat)), "sweep": asdict(ctx)}

    return space


def search_tune_config(num_samples: int, max_concurrent: int, seed: int, max_rungs: int):
    """Seeded Optuna TPE sampler + ASHA on the reported ``objective`` (one report per eval)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(seed=seed)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_rungs + 1,  # + the final result each trial driver reports itself
        grace_period=1,
        reduction_factor=2,
    )
    return tune.TuneConfig(
        metric="objective",
        mode="max",
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=max_concurrent,
        reuse_actors=True,  # as the grid: the trial driver's process serves the next trial
    )
