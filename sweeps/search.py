"""Search DI* settings: Optuna over the paper's alpha_rew and alpha_cfg (the grid's units,
translated per world) and guidance mode (and pseudo-Huber c with --huber-c-range); ASHA early
stopping; every trial a TorchTrainer tracked in MLflow.

Optuna proposes each trial from two metrics (the world preset's: on the embedded world its exact
reward and precision; on the text worlds held-out ones, Parti ImageReward and COCO CLIP score,
never the PickScore the generator is trained on): by default (--sampler gp) a GP models the
first with the second's --floor as a constraint. The run ends with their Pareto front. ASHA
stops trials on one scalar: the first metric while a floor holds on the second (a shortfall
below --floor costs --penalty per unit; for FID the floor is a ceiling).

    python sweeps/search.py --samples 12 --steps 600
    python sweeps/search.py --dry-run
"""

from __future__ import annotations

import argparse

from analysis.report import SMOKE_NOTE
from distar.config import paper
from distar.config.benchmarks import logged_name, lower_is_better
from distar.config.keys import K
from distar.config.tree import Config, parse_override
from distar.raytune.search_flags import SMOKE, check_flags, objective_of, run_sd_of
from distar.raytune.searcher import (
    ASHA_REDUCTION,
    PARAMETER,
    SAMPLERS,
    STOPPERS,
    paired_stopper,
    paper_prior,
    pareto_front,
    search_space,
    search_tune_config,
)
from distar.raytune.settings import SWEEP_REFUSALS, SweepSettings, preflight_sweep
from distar.raytune.warm import describe, load, untrained
from distar.util.refusals import Outputs, refusing

# --prior: how many of Table 2's DI* rows (best published first) the search tries first
PRIORS = {"none": 0, "table2-best": 1, "table2": None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/search.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--world", default="gmm")
    p.add_argument(
        "--samples",
        type=int,
        help="trials the searcher proposes at most (fewer once its model converges; default 12)",
    )
    p.add_argument("--steps", type=int, help="generator steps per trial (default 600)")
    p.add_argument("--evals", type=int, help="evaluations per trial = ASHA rungs (default 4)")
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
    p.add_argument(
        "--huber-c-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="search the pseudo-Huber c (log-uniform; e.g. 0.01 1); default: not searched, "
        "every trial at the base loss.huber_c (the grid's; --set loss.huber_c=C moves it). "
        "Why: a fourth axis costs the default 12-trial search its reliability (README)",
    )
    p.add_argument(
        "--prior",
        choices=list(PRIORS),
        default="table2-best",
        help="the first trials, at the base loss.huber_c: table2-best (default): the paper's "
        "Table 2 DI* row with the best published ImageReward inside the ranges; table2: all of "
        "them, best first; none: the sampler draws every trial (README: what each did)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="gp",
        help="what proposes each trial: gp (default): Optuna's GPSampler on --metric with "
        "--floor on --floor-metric as a constraint; tpe: TPE on the scalar objective ASHA "
        "stops on; pareto: multi-objective TPE over both metrics, spreading trials along "
        "their front (README: what each did against the grid)",
    )
    p.add_argument("--metric", help="maximised eval metric (default: the world preset's)")
    p.add_argument("--floor-metric", help="metric held above --floor (default: the preset's)")
    p.add_argument("--floor", type=float, help="the floor metric's floor (default: the preset's)")
    p.add_argument(
        "--allow-trained-reward",
        action="store_true",
        help="let --metric / --floor-metric be the reward the generator is trained on",
    )
    p.add_argument("--penalty", type=float, default=10.0)
    p.add_argument(
        "--stopper",
        choices=STOPPERS,
        default="asha",
        help="what stops weak trials early: ASHA on the objective at each evaluation "
        "(default); paired: a trial whose per-sample --metric is confidently "
        "below the best trial's at the same evaluation, on the same prompts "
        "and noise by more than two training runs differ (a test of the "
        "mean); both",
    )
    p.add_argument(
        "--stop-alpha",
        type=float,
        default=0.05,
        help="paired stopper: the chance that any trial as good as the best is "
        "stopped in the whole search (Bonferroni over the trials, their "
        "evaluations and rivals)",
    )
    p.add_argument(
        "--stop-run-sd",
        type=float,
        metavar="SD",
        help="paired stopper: the sd of --metric's mean between training runs of "
        "one setting, in its units (a grid's report prints it: 'run sd'); "
        "default: the world preset's measured value, where it has one",
    )
    p.add_argument(
        "--asha-reduction",
        type=int,
        default=ASHA_REDUCTION,
        help="ASHA's reduction factor: a trial goes on past a rung (evaluations 1, R, R**2, "
        f"...) only in the best 1/R there (default {ASHA_REDUCTION}: with 4 evaluations, one "
        "cut, at the first)",
    )
    p.add_argument(
        "--warm-start",
        metavar="STORE",
        help="a finished sweep's store (its --storage, e.g. runs/table2, or tracking URI): "
        "its runs trained as this search's trials are, inside the ranges, are the GP's first "
        "observations and ASHA's first records; --prior points among them are not retrained",
    )
    SweepSettings.add_arguments(p, "distar-search", "search", "runs/search")
    p.add_argument("--dry-run", action="store_true", help="print base config and space, exit")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help=f"{SMOKE['samples']} samples x {SMOKE['steps']} steps, {SMOKE['evals']} evaluations "
        "(refused beside --samples / --steps / --evals: give one or the other)",
    )
    return p


def print_axes(objective: dict, base: Config) -> None:
    held = "ceiling" if lower_is_better(objective["floor_metric"]) else "floor"
    print(
        f"pareto axes: {objective['metric']} (maximised) vs {objective['floor_metric']} "
        f"(fidelity; {held} {objective['floor']:g})"
    )
    trained = sorted(base.world.trained_metrics())
    if trained:
        print(f"trained on (not an objective unless --allow-trained-reward): {', '.join(trained)}")


def prior_line(points: list[dict], huber_c: float) -> str:
    """The prior's points as (guidance, alpha_rew, alpha_cfg, huber_c) in order (``huber_c``:
    the base config's, where a point does not set it)."""
    names = ("guidance", "alpha_rew", "alpha_cfg")
    values = [
        (*(p[PARAMETER[n]] for n in names), p.get(PARAMETER["huber_c"], huber_c)) for p in points
    ]
    return ", ".join(f"{g} {r:g}/{c:g} c={h:g}" for g, r, c, h in values) or "none"


def warm_start(args: argparse.Namespace, base: Config, ranges: tuple, objective: dict) -> list:
    """--warm-start's observations (:func:`distar.raytune.warm.load`), printed with every run
    left out and why."""
    if args.warm_start is None:
        return []
    uri, points, skipped = load(args.warm_start, base, ranges, objective)
    print("\n".join(describe(uri, points, skipped, objective["metric"])))
    return points


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=SWEEP_REFUSALS)


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    check_flags(args)
    flat = {
        K.train.steps: args.steps,
        K.train.eval_every: max(1, args.steps // args.evals),
        K.eval.plot: False,
    }
    settings = SweepSettings.from_args(args)
    flat.update(parse_override(o) for o in args.overrides)
    base = Config.for_world(args.world, flat)
    objective = objective_of(args, base)
    run_sd = run_sd_of(args, objective["metric"])  # refused here, before Ray starts
    preflight_sweep(base, args.dry_run)  # every file a trial reads, before Ray starts
    c_range = None if args.huber_c_range is None else tuple(args.huber_c_range)
    ranges = (tuple(args.alpha_rew_range), tuple(args.alpha_cfg_range), c_range)
    prior = paper_prior(base.loss.huber_c, *ranges)[: PRIORS[args.prior]]
    warm = warm_start(args, base, ranges, objective)
    prior = untrained(prior, warm)  # a warm run observed it: not trained again
    if args.dry_run:
        print(base.to_yaml(), end="")
        print(
            f"search: {paper.ALPHA_REW} ~ loguniform{tuple(args.alpha_rew_range)}, "
            f"{paper.ALPHA_CFG} ~ uniform{tuple(args.alpha_cfg_range)}, "
            + (
                f"loss.huber_c ~ loguniform{c_range}"
                if c_range
                else f"loss.huber_c {base.loss.huber_c:g} (not searched: --huber-c-range)"
            )
            + ", loss.guidance in (in, out)"
        )
        print(
            f"objective: {objective}; {args.samples} samples, seed {args.seed}; "
            f"sampler {args.sampler}; stopper {args.stopper}"
            + (f" (reduction {args.asha_reduction})" if args.stopper != "paired" else "")
            + (f" (run sd {run_sd:g})" if args.stopper != "asha" else "")
        )
        print_axes(objective, base)
        shown = prior_line(prior[: args.samples], base.loss.huber_c)
        print(f"first trials (--prior {args.prior}): {shown}")
        return 0
    outputs.watch(settings.storage)
    from distar.raytune.tuner import run_sweep

    print(
        f"search: {args.samples} trials x {args.steps} steps into {settings.storage} "
        f"(MLflow store {settings.uri()})"
    )
    if args.smoke_test:
        print(SMOKE_NOTE)

    space = search_space(base, args.seed, *ranges)
    pair = (objective["metric"], objective["floor_metric"])
    tune_config = search_tune_config(
        args.samples,
        args.max_concurrent,
        args.seed,
        base.train.evaluations(),
        pair,
        args.stopper,
        prior[: args.samples],
        args.sampler,
        objective["floor"],
        args.asha_reduction,
        warm,
    )
    stop = paired_stopper(
        args.stopper,
        objective["metric"],
        args.stop_alpha,
        base.train.evaluations(),
        run_sd,
        args.samples,
    )
    definition = {
        "base": base.to_flat(),
        "objective": objective,
        "ranges": ranges,
        "samples": args.samples,
        "seed": args.seed,
        "evals": args.evals,
        "stopper": args.stopper,
        "sampler": args.sampler,
        "prior": args.prior,
        "asha_reduction": args.asha_reduction,
        "stop_alpha": args.stop_alpha,
        "stop_run_sd": args.stop_run_sd,
    }
    if warm:  # only then: a search started before --warm-start existed still resumes
        definition |= {"warm_start": args.warm_start, "warm_runs": len(warm)}
    rows = run_sweep([], settings, tune_config, space, objective, definition, stop)
    if stop is not None:
        for trial, why in stop.stopped.items():
            print(f"paired stop: {trial}: {why}")
        if stop.skipped:
            print(
                f"paired stopper: {stop.skipped} comparisons not made (items that did not "
                f"pair, or fewer than {stop.rule.MIN_ITEMS} of {objective['metric']}: size "
                "eval.benchmarks / eval.samples_per_prompt up)"
            )
    print_results(rows, pair)
    from distar.raytune.mlflow_view import search_links

    for line in search_links(settings):
        print(line)
    return 1 if any(r["error"] for r in rows) else 0


def print_results(rows: list[dict], pair: tuple[str, str]) -> None:
    """Every trial by the scalar objective, then the Pareto front of the two searched metrics."""

    def line(r: dict) -> str:
        shown = " ".join(f"{m} {r.get(logged_name(m), float('nan')):.4f}" for m in pair)
        nan = float("nan")
        return (
            f"{r['key']}: {paper.ALPHA_REW} {r.get(paper.ALPHA_REW, nan):.4g} "
            f"{paper.ALPHA_CFG} {r.get(paper.ALPHA_CFG, nan):.4g} "
            f"objective {r.get('objective', nan):.4f} {shown} {r['error']}"
        )

    rows = sorted(rows, key=lambda r: r.get("objective", float("-inf")), reverse=True)
    for r in rows:
        print(line(r))
    print(f"\nPareto front ({pair[0]} vs {pair[1]}):")
    for r in pareto_front(rows, pair):
        print("  " + line(r))


if __name__ == "__main__":
    raise SystemExit(main())
