"""The paper's Table 2 ablation as a Ray Tune sweep of TorchTrainer trials, tracked in MLflow.

python sweeps/ablation_grid.py                 # embedded world, 11 rows x 2 seeds
python sweeps/ablation_grid.py --dry-run       # print the resolved trial list, exit
python sweeps/ablation_grid.py --smoke-test    # 2 rows, few steps
"""

from __future__ import annotations

import argparse
import sys

from analysis.paired_table import verdicts
from analysis.report import (
    SMOKE_NOTE,
    add_paired_flags,
    headline_cells,
    min_effect_of,
    overview_markdown,
    summary_metrics,
    units_line,
    write_reports,
)
from analysis.runs import load_runs
from distar.config import paper
from distar.config.keys import K
from distar.config.paper import TABLE2
from distar.config.tree import Config, ConfigError, parse_override, world_preset
from distar.raytune.grid import expand
from distar.raytune.settings import SWEEP_REFUSALS, SweepSettings, preflight_sweep
from distar.track import tracking
from distar.util.refusals import Outputs, refusing

SMOKE_ROWS = (TABLE2[1], TABLE2[-1])
SMOKE = {K.train.steps: 10, K.train.log_every: 5}  # over the world's own smoke settings
# The default grid answers at the setting level in about 7 minutes on 2 cores: 3 seeds per row
# (33 trials), bought with fewer steps (600 -> 300) and fewer items on the embedded world (8000
# -> 2000 a row and seed). Items are what the variance split says costs least: at 3 seeds the
# training runs' spread, not the items, sets the setting-level CI (report: "more seeds, not
# more prompts").
STEPS = 300
EMBEDDED_ITEMS = 500  # eval.samples_per_prompt: x 4 prompts = 2000 items a row and seed
SEEDS = (0, 1, 2)  # distar.track.paired.MIN_SEEDS: a row's paired verdict needs 3 training seeds
SMOKE_SEEDS = (0, 1)  # the smoke grid checks the path, not the verdicts: 2 keep CI short


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/ablation_grid.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--world",
        default="gmm",
        help="world preset (default: the embedded gmm; sd15, sdxl, sd15-tiny, sdxl-tiny, ...)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"generator steps per trial (default {STEPS}: the embedded grid, 33 trials, "
        "runs in about 7 minutes on 2 cores)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"training seeds per row (default {' '.join(map(str, SEEDS))}: the "
        f"{len(SEEDS)} a setting-level verdict needs; --smoke-test: "
        f"{' '.join(map(str, SMOKE_SEEDS))}, no verdicts)",
    )
    p.add_argument("--huber-c", type=float, nargs="+", help="cross the grid with these c values")
    SweepSettings.add_arguments(p, "distar-table2", "table2", "runs/table2")
    p.add_argument("--dry-run", action="store_true", help="print the resolved trials, exit")
    p.add_argument("--smoke-test", action="store_true", help="2 rows, few steps")
    add_paired_flags(p)
    return p


ROW_KEYS = (K.loss.divergence, K.loss.guidance, K.train.seed)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse what would be ignored or silently resolved: every input takes effect."""
    if args.smoke_test and args.steps is not None:
        raise ConfigError("--steps: not with --smoke-test (it sets 10 steps); give one of them")
    if args.steps is not None and not 1 <= args.steps <= 10**8:
        raise ConfigError(f"--steps: got {args.steps}; allowed: 1 to 100000000")
    for key, _ in (parse_override(o) for o in args.overrides):
        if key in paper.PAPER_KEYS:
            raise ConfigError(
                f"--set {key}: every trial's row sets it from the paper's alpha_rew / alpha_cfg "
                f"(CFG convention {paper.CFG_CONVENTION!r}, scaled by the --world preset); "
                "choose rows, or use sweeps/search.py --alpha-rew-range / --alpha-cfg-range"
            )
        if key in ROW_KEYS or (key == K.loss.huber_c and args.huber_c):
            raise ConfigError(
                f"--set {key}: every trial's row sets it (use --seeds / --huber-c, or a row)"
            )


def base_config(args: argparse.Namespace) -> Config:
    """The world preset < --steps < the world's smoke settings and SMOKE < --set."""
    check_flags(args)
    flat: dict = {K.eval.plot: True, K.train.steps: args.steps or STEPS}
    if args.smoke_test:
        flat.update({**world_preset(args.world).smoke, **SMOKE})
    flat.update(parse_override(o) for o in args.overrides)
    config = Config.for_world(args.world, flat)
    embedded = not config.world.text_to_image
    if K.eval.samples_per_prompt not in flat and embedded:
        config = config.with_overrides({K.eval.samples_per_prompt: EMBEDDED_ITEMS})
    if K.train.eval_every not in flat and (args.smoke_test or embedded):
        # eval metrics as curves (4 points), not one dot at the end: cheap on the embedded world
        # and on the tiny text presets a smoke test runs (a real text world sets its own)
        config = config.with_overrides({K.train.eval_every: max(1, config.train.steps // 4)})
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=SWEEP_REFUSALS)


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    rows = SMOKE_ROWS if args.smoke_test else TABLE2
    if args.baseline is not None and args.baseline not in [r.label for r in rows]:
        raise ConfigError(
            f"--baseline: {args.baseline!r} is not a row of this grid; its rows: "
            + ", ".join(repr(r.label) for r in rows)
        )
    if args.seeds is None:
        args.seeds = list(SMOKE_SEEDS if args.smoke_test else SEEDS)
    base = base_config(args)
    min_effect = min_effect_of(args, args.world)  # refused here, before Ray starts
    trials = expand(rows, base, args.seeds, args.huber_c)
    preflight_sweep(base, args.dry_run)  # what a trial reads, before Ray starts (a dry run too)
    if args.dry_run:
        for t in trials:
            f = t.flat_config
            print(
                f"{t.key:50s} {f[K.loss.divergence]:5s} {f[K.loss.guidance]:3s} "
                f"rew={f[K.loss.reward_scale]:<6g} cfg={f[K.loss.cfg_scale]:<6.3g} "
                f"c={f[K.loss.huber_c]:<6g} steps={f[K.train.steps]}"
            )
        print(f"{len(trials)} trials")
        return 0
    settings = SweepSettings.from_args(args)
    outputs.watch(settings.storage)  # removed if the sweep is refused from here on
    if args.smoke_test:
        print(
            f"{SMOKE_NOTE}: {len(rows)} rows x {len(args.seeds)} seeds x "
            f"{base.train.steps} steps, into {settings.storage}"
        )
    from distar.raytune.tuner import run_sweep  # Ray and MLflow: only for a real sweep

    rows_out = run_sweep(trials, settings)
    failed = [r for r in rows_out if r["error"]]
    for r in failed:
        print(f"FAILED {r['key']}: {r['error']}", file=sys.stderr)
    try:
        report(args, settings, base, (len(rows), len(trials)), min_effect)
    except tracking.TRACKING_ERRORS as error:
        print(
            f"report: the tracking store {settings.uri()} failed ({type(error).__name__}); "
            "trial outputs are under --storage; run analysis.report once it is back",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


def report(
    args: argparse.Namespace,
    settings: SweepSettings,
    base: Config,
    sizes: tuple[int, int],
    min_effect: dict[str, float],
) -> None:
    """The Table-2 report (and Tables 1-3 on a text world), printed and on the parent run: as
    its artifacts, its description (the run's Overview) and per-row summary metrics; the
    runs-table view the printed link opens."""
    from distar.raytune.mlflow_view import grid_view, log_sweep_report, tag_rows

    runs = load_runs(settings.uri(), args.experiment, args.name)
    out = args.storage.resolve() / "report"
    reports = write_reports(
        runs, settings.uri(), out, args.baseline, args.all_pairs, args.world, min_effect
    )
    n_rows, n_trials = sizes
    print(reports.text)
    sweep_params = {
        "sweep.world": args.world,
        "sweep.rows": n_rows,
        "sweep.seeds": " ".join(map(str, args.seeds)),
        "sweep.huber_c": " ".join(map(str, args.huber_c or [])) or "-",
        "sweep.steps": base.train.steps,
        "sweep.trials": n_trials,
    }

    preset = world_preset(args.world)
    headline = tuple(dict.fromkeys(preset.objective))  # the objective and its floor metric

    def overview(experiment: str, run_id: str) -> str:
        files = ("table2.md", "paired.md", "pareto.png", "table2.csv", "paired.csv")
        links = {
            name: tracking.run_url("", experiment, run_id, f"artifacts/report/{name}")
            for name in files
            if (out / name).exists()
        }
        return overview_markdown(reports, runs, links, headline)

    parent = log_sweep_report(settings, out, sweep_params, overview, summary_metrics(reports))
    tag_rows(settings.uri(), runs, verdicts(reports.paired), headline_cells(reports, headline))
    for line in grid_view(settings, preset, parent, units_line(runs)):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
