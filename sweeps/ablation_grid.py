"""The paper's Table 2 ablation as a Ray Tune sweep of TorchTrainer trials, tracked in MLflow.

python sweeps/ablation_grid.py                 # embedded world, 11 rows x 2 seeds
python sweeps/ablation_grid.py --dry-run       # print the resolved trial list, exit
python sweeps/ablation_grid.py --smoke-test    # 2 rows, few steps
"""

from __future__ import annotations

import argparse
import sys

from analysis.report import add_paired_flags, report_text
from analysis.runs import load_runs
from distar import paper, tracking
from distar.config import Config, ConfigError, parse_override, world_preset
from distar.paper import TABLE2
from distar.raytune.grid import expand
from distar.raytune.settings import SWEEP_REFUSALS, SweepSettings, preflight_sweep
from distar.refusals import Outputs, refusing

SMOKE_ROWS = (TABLE2[1], TABLE2[-1])
SMOKE = {"train.steps": 10, "train.log_every": 5}  # over the world's own smoke settings


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
        help="generator steps per trial (default 600: the embedded grid, 22 trials, "
        "runs in under 15 minutes on 2 cores)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--huber-c", type=float, nargs="+", help="cross the grid with these c values")
    SweepSettings.add_arguments(p, "distar-table2", "table2", "runs/table2")
    p.add_argument("--dry-run", action="store_true", help="print the resolved trials, exit")
    p.add_argument("--smoke-test", action="store_true", help="2 rows, few steps")
    add_paired_flags(p)
    return p


ROW_KEYS = ("loss.divergence", "loss.guidance", "train.seed")


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
        if key in ROW_KEYS or (key == "loss.huber_c" and args.huber_c):
            raise ConfigError(
                f"--set {key}: every trial's row sets it (use --seeds / --huber-c, or a row)"
            )


def base_config(args: argparse.Namespace) -> Config:
    """The world preset < --steps < the world's smoke settings and SMOKE < --set."""
    check_flags(args)
    flat: dict = {"eval.plot": True, "train.steps": args.steps or 600}
    if args.smoke_test:
        flat.update({**world_preset(args.world).smoke, **SMOKE})
    flat.update(parse_override(o) for o in args.overrides)
    config = Config.for_world(args.world, flat)
    if not config.world.text_to_image and "train.eval_every" not in flat:
        # eval metrics as curves (4 points), not one dot at the end; cheap on the embedded world
        config = config.with_overrides({"train.eval_every": max(1, config.train.steps // 4)})
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return refusing(lambda outputs: run(args, outputs), extra=SWEEP_REFUSALS)


def run(args: argparse.Namespace, outputs: Outputs) -> int:
    rows = SMOKE_ROWS if args.smoke_test else TABLE2
    if args.baseline is not None and args.baseline not in [r.label for r in rows]:
        raise ConfigError(f"--baseline: {args.baseline!r} is not a row of this grid; its rows: "
                          + ", ".join(repr(r.label) for r in rows))  # fmt: skip
    base = base_config(args)
    trials = expand(rows, base, args.seeds, args.huber_c)
    preflight_sweep(base)  # every file a trial reads, before Ray starts (a dry run too)
    if args.dry_run:
        for t in trials:
            f = t.flat_config
            print(
                f"{t.key:50s} {f['loss.divergence']:5s} {f['loss.guidance']:3s} "
                f"rew={f['loss.reward_scale']:<6g} cfg={f['loss.cfg_scale']:<6.3g} "
                f"c={f['loss.huber_c']:<6g} steps={f['train.steps']}"
            )
        print(f"{len(trials)} trials")
        return 0
    settings = SweepSettings.from_args(args)
    outputs.watch(settings.storage)  # removed if the sweep is refused from here on
    from distar.raytune.tuner import run_sweep  # Ray and MLflow: only for a real sweep

    rows_out = run_sweep(trials, settings)
    failed = [r for r in rows_out if r["error"]]
    for r in failed:
        print(f"FAILED {r['key']}: {r['error']}", file=sys.stderr)
    try:
        report(args, settings, base, len(rows), len(trials))
    except tracking.TRACKING_ERRORS as error:
        print(f"report: the tracking store {settings.uri()} failed ({type(error).__name__}); "
              "trial outputs are under --storage; run analysis.report once it is back",
              file=sys.stderr)  # fmt: skip
        return 1
    return 1 if failed else 0


def report(args: argparse.Namespace, settings: SweepSettings, base: Config, n_rows: int,
           n_trials: int) -> None:  # fmt: skip
    """The Table-2 report (and Tables 1-3 on a text world), printed and on the parent run."""
    from distar.raytune.tuner import log_sweep_report

    runs = load_runs(settings.uri(), args.experiment, args.name)
    out = args.storage.resolve() / "report"
    print(report_text(runs, settings.uri(), out, args.baseline, args.all_pairs))
    sweep_params = {
        "sweep.world": args.world,
        "sweep.rows": n_rows,
        "sweep.seeds": " ".join(map(str, args.seeds)),
        "sweep.huber_c": " ".join(map(str, args.huber_c or [])) or "-",
        "sweep.steps": base.train.steps,
        "sweep.trials": n_trials,
    }
    log_sweep_report(settings, out, sweep_params)  # the parent run holds the report
    print_ui_hint(settings)


def print_ui_hint(settings: SweepSettings) -> None:
    from mlflow.tracking import MlflowClient

    uri = settings.uri()
    experiment = MlflowClient(uri).get_experiment_by_name(settings.experiment)
    if uri.startswith("http"):
        print(f"MLflow: {tracking.mlflow_ui_url(uri, experiment.experiment_id)}")
        return
    url = tracking.mlflow_ui_url("http://127.0.0.1:5000", experiment.experiment_id)
    print(f"MLflow: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, then open "
          f"{url}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
