"""The search's flags (``sweeps/search.py``) checked before Ray starts: sizes, ranges, the
``--set`` keys the search owns, the objective's metrics and the paired stopper's run sd. Each
refusal is one ``ConfigError`` naming the flag and what is allowed."""

from __future__ import annotations

import argparse
import math

from distar.config.benchmarks import SET_METRICS
from distar.config.keys import K
from distar.config.tree import Config, ConfigError, parse_override, world_preset
from distar.evaluation.preflight import active_requests

# what the searcher draws or the flags set: a --set of one would be overwritten in every trial
SEARCHED = {
    K.loss.reward_scale: "--alpha-rew-range (the paper's alpha_rew)",
    K.loss.cfg_scale: "--alpha-cfg-range (the paper's alpha_cfg)",
    K.loss.cfg_convention: "--alpha-cfg-range (the paper's alpha_cfg, distar's convention)",
    K.loss.huber_c: "--huber-c-range (or leave that out: then --set sets every trial's c)",
    K.loss.guidance: "nothing: the searcher draws in and out",
    K.train.seed: "--seed",
    K.train.steps: "--steps",
    K.train.eval_every: "--evals",
}


SMOKE = {"samples": 3, "steps": 10, "evals": 2}
DEFAULTS = {"samples": 12, "steps": 600, "evals": 4}


def sizes(args: argparse.Namespace) -> None:
    """--samples / --steps / --evals: given, or --smoke-test's, or the defaults; an explicit
    size beside --smoke-test is refused (it would be overridden)."""
    for flag, value in SMOKE.items() if args.smoke_test else DEFAULTS.items():
        if args.smoke_test and getattr(args, flag) is not None:
            raise ConfigError(f"--{flag}: not with --smoke-test (it sets {value}); give one")
        if getattr(args, flag) is None:
            setattr(args, flag, value)


def check_metrics(objective: dict, base: Config, preset_metrics: tuple[str, ...]) -> None:
    """--metric / --floor-metric: a metric every trial reports (the world preset's, or a
    configured benchmark's ``bench/metric``), checked before Ray starts."""
    benchmarks = [f"{r.benchmark}/{m}" for r in active_requests(base.eval) for m in r.metrics]
    known = sorted({*preset_metrics, *benchmarks})
    for flag, key in (("--metric", "metric"), ("--floor-metric", "floor_metric")):
        if objective[key] not in known:
            raise ConfigError(f"{flag}: got {objective[key]!r}; allowed: {', '.join(known)}")


def check_flags(args: argparse.Namespace) -> None:
    """Sizes and ranges that would run forever, do nothing or be silently swapped."""
    sizes(args)
    for flag, value, high in (
        ("samples", args.samples, 100_000),
        ("steps", args.steps, 10**8),
        ("evals", args.evals, 10_000),
    ):
        if not 1 <= value <= high:
            raise ConfigError(f"--{flag}: got {value}; allowed: 1 to {high}")
    for key, _ in (parse_override(o) for o in args.overrides):
        if key in SEARCHED and not (key == K.loss.huber_c and args.huber_c_range is None):
            use = SEARCHED[key]
            raise ConfigError(f"--set {key}: the search sets it in every trial; use {use}")
    if not 0 < args.stop_alpha < 1:
        raise ConfigError(f"--stop-alpha: got {args.stop_alpha}; allowed: 0 < ALPHA < 1")
    if args.stop_run_sd is not None and not 0 <= args.stop_run_sd < math.inf:
        raise ConfigError(f"--stop-run-sd: got {args.stop_run_sd}; allowed: 0 <= SD, finite")
    if args.stop_run_sd is not None and args.stopper == "asha":
        raise ConfigError("--stop-run-sd: only with --stopper paired or both (ASHA ignores it)")
    if args.warm_start is not None and args.sampler != "gp":
        raise ConfigError(f"--warm-start: only with --sampler gp, not {args.sampler}")
    if not 2 <= args.asha_reduction <= 1000:
        raise ConfigError(f"--asha-reduction: got {args.asha_reduction}; allowed: 2 to 1000")
    if args.evals > args.steps:
        raise ConfigError(f"--evals: got {args.evals}; allowed: at most --steps ({args.steps})")
    for flag in ("alpha_rew_range", "alpha_cfg_range", "huber_c_range"):
        if getattr(args, flag) is None:  # huber c, not searched
            continue
        (low, high), name = getattr(args, flag), "--" + flag.replace("_", "-")
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            raise ConfigError(f"{name}: got {low} {high}; allowed: finite, 0 <= LOW < HIGH")
        if flag != "alpha_cfg_range" and low <= 0:  # drawn log-uniformly
            raise ConfigError(f"{name}: got {low} {high}; allowed: 0 < LOW < HIGH (log-uniform)")


def objective_of(args: argparse.Namespace, base: Config) -> dict:
    """The preset's objective under the flags; an objective on the trained reward is refused
    unless ``--allow-trained-reward`` (reward hacking would score best)."""
    preset = world_preset(args.world)
    metric = args.metric or preset.objective[0]
    floor_metric = args.floor_metric or preset.objective[1]
    trained = base.world.trained_metrics() & {metric, floor_metric}
    if trained and not args.allow_trained_reward:
        flag = "--metric" if metric in trained else "--floor-metric"
        raise ConfigError(
            f"{flag}: {sorted(trained)[0]} is the reward this world trains on; a search on it "
            "rewards reward hacking (paper §B.1). Use a held-out metric (e.g. parti/imagereward, "
            "coco/clip_score, coco/fid) or pass --allow-trained-reward"
        )
    floor = preset.floor if args.floor is None else args.floor
    objective = {
        "metric": metric,
        "floor_metric": floor_metric,
        "floor": floor,
        "penalty": args.penalty,
    }
    check_metrics(objective, base, preset.metrics)
    if args.stopper != "asha" and metric.rpartition("/")[2] in SET_METRICS:
        raise ConfigError(
            f"--stopper {args.stopper}: {metric} is a set metric with no "
            "per-sample values to pair; use --stopper asha or another --metric"
        )
    return objective


def run_sd_of(args: argparse.Namespace, metric: str) -> float:
    """--stop-run-sd, or the world preset's measured training-run sd of ``metric``; a paired
    stopper without one is refused (it could not keep its promise)."""
    if args.stop_run_sd is not None:
        return args.stop_run_sd
    measured = world_preset(args.world).run_sd.get(metric)
    if measured is None and args.stopper != "asha":
        raise ConfigError(
            f"--stop-run-sd: needed with --stopper {args.stopper} on --world "
            f"{args.world} for {metric} (no measured value): run the grid with 3+ "
            "seeds and pass the 'run sd' its report prints"
        )
    return measured or 0.0
