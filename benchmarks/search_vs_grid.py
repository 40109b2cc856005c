"""How much compute the search needs to match the grid's best objective within 1 %. Not a test.

    python benchmarks/search_vs_grid.py --steps 200 --samples 11      # runs both, then compares
    python benchmarks/search_vs_grid.py --prior table2                # the paper's rows first
    python benchmarks/search_vs_grid.py --grid runs/table2 --search runs/s0 runs/s1  # finished

The search runs once per ``--search-seeds`` seed (default 0 to 4: one seed's figure is luck as
much as method), per ``--samplers`` entry (default: gp, the default search's; also tpe and
pareto -- ``search.py --sampler``) and per ``--stoppers`` entry (default: ASHA, the default
search's; also ``paired`` and ``both`` -- ``search.py --stopper``; the paired stopper's run sd
is the world preset's unless ``--stop-run-sd``), with ``--prior`` (``search.py --prior``,
default table2-best, the search's); the figure per seed, their median and their worst are
printed per sampler and stopper (``--huber-c-range``: each searches c too, ``search.py
--huber-c-range``). ``--warm-start`` starts each search from the grid's finished
runs (``search.py --warm-start GRID``): its figure is then the compute a search adds after the
grid.

The objective is the search's scalar (``--metric`` minus ``--penalty`` per unit that
``--floor-metric`` falls below ``--floor``; default: reward with precision >= 0.9), computed for
the grid's trials from their final evaluation. Compute = generator steps trained, summed over
trials (ASHA-stopped search trials count the steps they ran). The search's trials are taken in
the order they started; the figure is the compute spent when the best objective so far first
came within 1 % of the grid's best, as a fraction of the grid's total.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distar.raytune.spec import Objective  # noqa: E402
from distar.runtime import timing  # noqa: E402


def trial_outcomes(storage: Path, objective: Objective) -> list[dict]:
    """Per trial (in start order): steps trained and the final objective (None: no eval)."""
    out = []
    for trial in (storage / "trials").iterdir():
        lines = (
            (trial / "metrics.jsonl").read_text().splitlines()
            if (trial / "metrics.jsonl").exists()
            else []
        )
        records = [json.loads(x) for x in lines]
        evals = [r for r in records if r["kind"] == "eval"]
        steps = max((r["step"] for r in records), default=0)
        value = objective(evals[-1]) if evals else None
        marks, _ = timing.read(trial)
        out.append(
            {
                "trial": trial.name,
                "steps": steps,
                "objective": value,
                "start": marks.get("driver_start", 0.0),
            }
        )
    return sorted(out, key=lambda r: r["start"])


def run(script: str, storage: Path, args: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "sweeps" / script), "--storage", str(storage), *args]
    done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    if done.returncode == 2:  # refused (its one line is on stderr): nothing to compare
        raise SystemExit(f"{script} refused its flags: {' '.join(args)}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--grid", type=Path, help="a finished grid's --storage (default: run one)")
    p.add_argument(
        "--search",
        type=Path,
        nargs="+",
        help="finished searches' --storage (default: run one per --search-seeds)",
    )
    p.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--stoppers",
        nargs="+",
        default=["asha"],
        help="search.py --stopper values to compare (default: asha; also paired, both)",
    )
    p.add_argument(
        "--samplers",
        nargs="+",
        default=["gp"],
        help="search.py --sampler values to compare (default: gp, the default search's; also "
        "tpe, pareto)",
    )
    p.add_argument(
        "--prior", default="table2-best", help="search.py --prior (table2-best, table2, none)"
    )
    p.add_argument(
        "--warm-start",
        action="store_true",
        help="each search starts from the grid's finished runs (search.py --warm-start GRID): "
        "its compute is then what the search adds after the grid",
    )
    p.add_argument("--asha-reduction", type=int, help="search.py --asha-reduction")
    p.add_argument(
        "--huber-c-range",
        type=float,
        nargs=2,
        help="search.py --huber-c-range (default: c not searched, the grid's, as the search's)",
    )
    p.add_argument("--stop-run-sd", type=float, help="search.py --stop-run-sd")
    p.add_argument("--max-concurrent", type=int, help="search.py --max-concurrent")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--samples", type=int, default=11)
    p.add_argument("--evals", type=int, default=4)
    p.add_argument("--metric", default="reward")
    p.add_argument("--floor-metric", default="precision")
    p.add_argument("--floor", type=float, default=0.9)
    p.add_argument("--penalty", type=float, default=10.0)
    args = p.parse_args()
    # where runs go; comparing finished runs (--grid and --search) makes no folder
    tmp = (
        None
        if args.grid and args.search
        else Path(tempfile.mkdtemp(prefix="distar-search-vs-grid-"))
    )
    if args.grid is None:
        args.grid = tmp / "grid"
        run("ablation_grid.py", args.grid, ["--seeds", "0", "--steps", str(args.steps)])
    searches = {"given": args.search} if args.search else {}
    for sampler, stopper in [] if args.search else product(args.samplers, args.stoppers):
        name = f"{sampler}-{stopper}" + ("-warm" if args.warm_start else "")
        name += "-c" if args.huber_c_range else ""
        searches[name] = []
        for seed in args.search_seeds:
            searches[name].append(tmp / f"search-{name}-s{seed}")
            optional = ["--stop-run-sd", str(args.stop_run_sd)] if args.stop_run_sd else []
            if args.asha_reduction:
                optional += ["--asha-reduction", str(args.asha_reduction)]
            if args.huber_c_range:
                optional += ["--huber-c-range", *map(str, args.huber_c_range)]
            if args.max_concurrent:
                optional += ["--max-concurrent", str(args.max_concurrent)]
            if args.warm_start:
                optional += ["--warm-start", str(args.grid)]
            flags = {
                "--samples": args.samples,
                "--steps": args.steps,
                "--evals": args.evals,
                "--seed": seed,
                "--sampler": sampler,
                "--stopper": stopper,
                "--prior": args.prior,
            }
            run("search.py", searches[name][-1], [*flat_flags(flags), *optional])
    objective = Objective(args.metric, args.floor_metric, args.floor, args.penalty)
    grid = trial_outcomes(args.grid, objective)
    grid_best = max(r["objective"] for r in grid if r["objective"] is not None)
    grid_compute = sum(r["steps"] for r in grid)
    print(f"grid:   {len(grid)} trials, {grid_compute} steps, best objective {grid_best:.4f}")
    figures = {
        name: compare_searches(found, objective, grid_best, grid_compute)
        for name, found in searches.items()
    }
    for name, fractions in figures.items():
        median, worst = statistics.median(fractions), max(fractions)
        print(
            f"{name}: {share(median)} of the grid's compute (median over {len(fractions)} "
            f"searches), {share(worst)} in the worst, to come within 1 % of its best objective"
        )


def flat_flags(flags: dict) -> list[str]:
    return [str(x) for pair in flags.items() for x in pair]


def share(fraction: float) -> str:
    return f"{fraction:.0%}" if fraction < float("inf") else "never"


def compare_searches(
    storages: list[Path], objective: Objective, grid_best: float, grid_compute: int
) -> list[float]:
    """Each search's line (trials, steps, best, compute to match the grid); each one's fraction
    of the grid's compute (inf for a search that never matched)."""
    fractions = []
    for storage in storages:
        search = trial_outcomes(storage, objective)
        matched, best = compute_to_match(search, grid_best - 0.01 * abs(grid_best))
        spent = sum(r["steps"] for r in search)
        line = f"search {storage.name}: {len(search)} trials, {spent} steps, best {best:.4f}; "
        if matched is None:
            fractions.append(float("inf"))
            print(line + "never came within 1 % of the grid's best")
        else:
            fractions.append(matched / grid_compute)
            print(
                line + f"within 1 % of the grid's best after {matched} steps "
                f"= {fractions[-1]:.0%} of the grid's compute"
            )
    return fractions


def compute_to_match(search: list[dict], target: float) -> tuple[int | None, float]:
    """Steps spent (trials in start order) until the best objective so far reached ``target``
    (None: never), and the best objective reached."""
    spent, best, matched = 0, float("-inf"), None
    for r in search:
        spent += r["steps"]
        if r["objective"] is not None:
            best = max(best, r["objective"])
        if matched is None and best >= target:
            matched = spent
    return matched, best


if __name__ == "__main__":
    main()
