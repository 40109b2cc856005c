"""Search DI* settings: Optuna over the paper's alpha_rew and alpha_cfg (the grid's units,
translated per world), pseudo-Huber c and guidance mode; ASHA early stopping; every trial a
TorchTrainer tracked in MLflow.

Optuna searches two objectives at once (the world preset's: on the embedded world its exact
reward and precision; on the text worlds held-out ones, Parti ImageReward and COCO CLIP score,
never the PickScore the generator is trained on) and the run ends with their Pareto front. ASHA
stops trials on one scalar: the first metric while a floor holds on the second (a shortfall
below --floor costs --penalty per unit; for FID the floor is a ceiling).

    python sweeps/search.py --samples 12 --steps 600
    python sweeps/search.py --dry-run
"""

from __future__ import annotations

import argparse
import math
import sys

from distar import paper
from distar.benchmark_catalogue import logged_name, lower_is_better
from distar.config import Config, ConfigError, parse_override, world_preset
from distar.evaluation.preflight import preflight
from distar.raytune.searcher import pareto_front, search_space, search_tune_config
from distar.raytune.settings import SWEEP_REFUSALS, SweepSettings

# what the searcher draws or the flags set: a --set of one would be overwritten in every trial
SEARCHED = {
    "loss.reward_scale": "--alpha-rew-range (the paper's alpha_rew)",
    "loss.cfg_scale": "--alpha-cfg-range (the paper's alpha_cfg)",
    "loss.cfg_convention": "--alpha-cfg-range (the paper's alpha_cfg, distar's convention)",
    "loss.huber_c": "--huber-c-range",
    "loss.guidance": "nothing: the searcher draws in and out",
    "train.seed": "--seed",
    "train.steps": "--steps",
    "train.eval_every": "--evals",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/search.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--world", default="gmm")
    p.add_argument("--samples", type=int, default=12, help="trials the searcher proposes")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--evals", type=int, default=4, help="evaluations per trial = ASHA rungs")
    p.add_argument("--seed", type=int, default=0, help="seeds the searcher and every trial")
    p.add_argument(
        "--alpha-rew-range",
        type=float,
        nargs=2,
        default=[1.0, 300.0],
        help="the paper's alpha_rew (log-uniform); Table 2 uses 1 to 100",
    )
    p.add_argument(
        "--alpha-cfg-range",
        type=float,
        nargs=2,
        default=[0.0, 11.25],
        help="the paper's alpha_cfg (uniform); Table 2 uses 0 to 7.5",
    )
    p.add_argument("--huber-c-range", type=float, nargs=2, default=[0.01, 1.0])
    p.add_argument("--metric", help="maximised eval metric (default: the world preset's)")
    p.add_argument("--floor-metric", help="metric held above --floor (default: the preset's)")
    p.add_argument("--floor", type=float, help="the floor metric's floor (default: the preset's)")
    p.add_argument(
        "--allow-trained-reward",
        action="store_true",
        help="let --metric / --floor-metric be the reward the generator is trained on",
    )
    p.add_argument("--penalty", type=float, default=10.0)
    SweepSettings.add_arguments(p, "distar-search", "search", "runs/search")
    p.add_argument("--dry-run", action="store_true", help="print base config and space, exit")
    p.add_argument("--smoke-test", action="store_true", help="3 samples, few steps")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Sizes and ranges that would run forever, do nothing or be silently swapped."""
    for flag, value, high in (("samples", args.samples, 100_000), ("steps", args.steps, 10**8),
                              ("evals", args.evals, 10_000)):  # fmt: skip
        if not 1 <= value <= high:
            raise ConfigError(f"--{flag}: got {value}; allowed: 1 to {high}")
    for key, _ in (parse_override(o) for o in args.overrides):
        if key in SEARCHED:
            use = SEARCHED[key]
            raise ConfigError(f"--set {key}: the search sets it in every trial; use {use}")
    if args.evals > args.steps:
        raise ConfigError(f"--evals: got {args.evals}; allowed: at most --steps ({args.steps})")
    for flag in ("alpha_rew_range", "alpha_cfg_range", "huber_c_range"):
        low, high = getattr(args, flag)
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            name = "--" + flag.replace("_", "-")
            raise ConfigError(f"{name}: got {low} {high}; allowed: finite, 0 <= LOW < HIGH")


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
    return {"metric": metric, "floor_metric": floor_metric, "floor": floor, "penalty": args.penalty}


def print_axes(objective: dict, base: Config) -> None:
    held = "ceiling" if lower_is_better(objective["floor_metric"]) else "floor"
    print(f"pareto axes: {objective['metric']} (maximised) vs {objective['floor_metric']} "
          f"(fidelity; {held} {objective['floor']:g})")  # fmt: skip
    trained = sorted(base.world.trained_metrics())
    if trained:
        print(f"trained on (not an objective unless --allow-trained-reward): {', '.join(trained)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke_test:
        args.samples, args.steps, args.evals = 3, 10, 2
    try:
        check_flags(args)
        flat = {
            "train.steps": args.steps,
            "train.eval_every": max(1, args.steps // args.evals),
            "eval.plot": False,
        }
        settings = SweepSettings.from_args(args)
        flat.update(parse_override(o) for o in args.overrides)
        base = Config.for_world(args.world, flat)
        objective = objective_of(args, base)
        preflight(base.eval)  # a missing prompt or weight file fails here, before Ray starts
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(base.to_yaml(), end="")
        print(
            f"search: {paper.ALPHA_REW} ~ loguniform{tuple(args.alpha_rew_range)}, "
            f"{paper.ALPHA_CFG} ~ uniform{tuple(args.alpha_cfg_range)}, "
            f"loss.huber_c ~ loguniform{tuple(args.huber_c_range)}, loss.guidance in (in, out)"
        )
        print(f"objective: {objective}; {args.samples} samples, seed {args.seed}")
        print_axes(objective, base)
        return 0
    from distar.raytune.tuner import run_sweep

    ranges = (tuple(args.alpha_rew_range), tuple(args.alpha_cfg_range), tuple(args.huber_c_range))
    space = search_space(base, args.seed, *ranges)
    pair = (objective["metric"], objective["floor_metric"])
    tune_config = search_tune_config(args.samples, args.max_concurrent, args.seed, args.evals, pair)
    definition = {"base": base.to_flat(), "objective": objective, "ranges": ranges,
                  "samples": args.samples, "seed": args.seed, "evals": args.evals}  # fmt: skip
    try:
        rows = run_sweep([], settings, tune_config, space, objective, definition)
    except SWEEP_REFUSALS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_results(rows, pair)
    return 1 if any(r["error"] for r in rows) else 0


def print_results(rows: list[dict], pair: tuple[str, str]) -> None:
    """Every trial by the scalar objective, then the Pareto front of the two searched metrics."""
    def line(r: dict) -> str:
        shown = " ".join(f"{m} {r.get(logged_name(m), float('nan')):.4f}" for m in pair)
        nan = float("nan")
        return (f"{r['key']}: {paper.ALPHA_REW} {r.get(paper.ALPHA_REW, nan):.4g} "
                f"{paper.ALPHA_CFG} {r.get(paper.ALPHA_CFG, nan):.4g} "
                f"objective {r.get('objective', nan):.4f} {shown} {r['error']}")  # fmt: skip

    rows = sorted(rows, key=lambda r: r.get("objective", float("-inf")), reverse=True)
    for r in rows:
        print(line(r))
    print(f"\nPareto front ({pair[0]} vs {pair[1]}):")
    for r in pareto_front(rows, pair):
        print("  " + line(r))


if __name__ == "__main__":
    raise SystemExit(main())
