"""Does a change keep the Table-2 numbers? Runs the ablation grid at two git revisions (each in
its own worktree, the same seeds) and compares their ``report/table2.csv`` cell by cell.

    python scripts/same_report.py ed9622b              # the smoke grid at ed9622b and at HEAD
    python scripts/same_report.py ed9622b HEAD --full  # the default grid (22 trials, ~15 min each)

Every column both reports have is compared as written (exact, no tolerance); a column only one of
them has (a report that gained a column) is listed, not compared. Exit 0 when the shared cells are
identical, 1 when any differs or the rows differ. A refactor should keep every number: training
draws, evaluation noise and the statistics all follow the seeds.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# columns that may differ between two identical runs: none today (the report has no timings)
IGNORED: frozenset[str] = frozenset()


def run_grid(rev: str, work: Path, full: bool, extra: list[str]) -> Path:
    """The grid at ``rev``, from a worktree of it; returns its report/table2.csv."""
    storage = work / f"runs-{rev}"
    if (storage / "report" / "table2.csv").is_file():  # kept from an earlier call with --work
        print(f"[{rev}] reusing {storage}", flush=True)
        return storage / "report" / "table2.csv"
    tree = work / f"tree-{rev}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev],
        check=True,
        capture_output=True,
    )
    cmd = [sys.executable, "sweeps/ablation_grid.py", "--storage", str(storage), *extra]
    if not full:
        cmd.append("--smoke-test")
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    print(f"[{rev}] {' '.join(cmd[1:])}", flush=True)
    log = work / f"grid-{rev}.log"
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"[{rev}] the grid failed (exit {done.returncode}); see {log}")
    return storage / "report" / "table2.csv"


def read_table(path: Path) -> Table:
    with path.open(newline="") as f:
        return {row["label"]: row for row in csv.DictReader(f)}


Table = dict[str, dict[str, str]]  # label -> column -> cell


def compare(a: Table, b: Table, names: tuple[str, str]) -> int:
    """Prints what differs between two tables; returns the number of differences."""
    if list(a) != list(b):
        print(f"rows differ:\n  {names[0]}: {list(a)}\n  {names[1]}: {list(b)}")
        return 1
    cols_a, cols_b = next(iter(a.values())).keys(), next(iter(b.values())).keys()
    shared = [c for c in cols_a if c in cols_b and c not in IGNORED]
    for name, mine, theirs in ((names[0], cols_a, cols_b), (names[1], cols_b, cols_a)):
        if only := set(mine) - set(theirs):
            print(f"only in {name} (not compared): {', '.join(sorted(only))}")
    diffs = [
        (label, c, a[label][c], b[label][c])
        for label in a
        for c in shared
        if a[label][c] != b[label][c]
    ]
    for label, col, va, vb in diffs:
        print(f"  {label} / {col}: {va} vs {vb}")
    print(
        f"{len(a)} rows x {len(shared)} shared columns: "
        f"{'identical' if not diffs else f'{len(diffs)} cells differ'}"
    )
    return len(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Flags after -- go to both grids (e.g. -- --seeds 0 1 2).",
    )
    parser.add_argument("before", help="a git revision")
    parser.add_argument("after", nargs="?", default="HEAD", help="a git revision (default HEAD)")
    parser.add_argument("--full", action="store_true", help="the default grid, not the smoke grid")
    parser.add_argument(
        "--work",
        type=Path,
        help="keep runs and logs here; a revision whose report is already here "
        "is not run again (name revisions by commit, not HEAD, to reuse)",
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    work = args.work or Path(tempfile.mkdtemp(prefix="same-report-"))
    work.mkdir(parents=True, exist_ok=True)
    revs = (args.before, args.after)
    try:
        tables = [read_table(run_grid(rev, work, args.full, extra)) for rev in revs]
    finally:  # the runs and logs stay in `work`; the worktrees go
        for rev in revs:
            tree = str(work / f"tree-{rev}")
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "-f", tree],
                check=False,
                capture_output=True,
            )
    print(f"runs and logs: {work}")
    sys.exit(1 if compare(*tables, names=revs) else 0)


if __name__ == "__main__":
    main()
