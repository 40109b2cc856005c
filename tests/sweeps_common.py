"""What the sweep tests share: tiny trials and running them through Ray into MLflow."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from distar.config.paper import TABLE2
from distar.config.tree import Config
from distar.raytune.grid import expand
from distar.raytune.spec import TrialSpec
from distar.runtime.local_ray import free_port  # noqa: F401  (the tests' ports, as Ray's)

ROOT = Path(__file__).resolve().parents[1]

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


# Ray notices a dead node in seconds, not its default ~30 s (the multi-node tests' nodes)
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def script(name: str):
    """``main`` of ``sweeps/<name>.py``, loaded in this process (``main(argv) -> exit code``)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def dry_run(name: str, argv: list[str]) -> tuple[int, str, str]:
    """``sweeps/<name>.py <argv> --dry-run`` in this process (a dry run starts nothing; an
    interpreter of its own cost ~3.7 s of imports): its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = script(name)([*argv, "--dry-run"])
    return code, out.getvalue(), err.getvalue()


def dry_run_keys(name: str, argv: list[str]) -> list[str]:
    """The trial folders' names ``sweeps/<name>.py <argv> --dry-run`` prints (a trial a line,
    then one summary line)."""
    code, out, err = dry_run(name, argv)
    assert code == 0, err
    return [line.split()[0] for line in out.splitlines()[:-1]]


def tiny_trials(rows=(TABLE2[1],), seeds=(0, 1), **flat) -> list[TrialSpec]:
    return expand(tuple(rows), Config().with_overrides({**TINY, **flat}), list(seeds))


def run(trials, tmp_path, name="t", uri=None, resume=False):
    from distar.raytune.settings import SweepSettings
    from distar.raytune.tuner import run_sweep

    return run_sweep(trials, SweepSettings(name, "exp", tmp_path, uri, 2, resume))


def child_runs(uri: str, sweep: str, experiment: str = "exp") -> pd.DataFrame:
    from analysis.runs import load_runs

    return load_runs(uri, experiment, sweep)


def readme_command(needle: str) -> str:
    """The README's one command line (in a ```bash block) that holds ``needle``."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (line,) = [line for block in blocks for line in block.splitlines() if needle in line]
    return line


def readme_sd15_tiny_smoke(tmp_path: Path) -> tuple[Path, str]:
    """The README's sd15-tiny smoke grid, copied and run as written in a fresh folder (beside
    a link to ``sweeps/``), with the shipped prompt files (no ``DISTAR_*_PROMPTS`` override):
    its install names the extras that world and a sweep need (CI installs them all), its
    command succeeds. Returns its storage and its console output."""
    from distar.config import extras

    install, _, command = readme_command("--world sd15-tiny --smoke-test").partition(" && ")
    named = set(re.search(r'"\.\[([\w,]+)\]"', install)[1].split(","))
    assert (
        install.startswith("pip install -e ")
        and {"sweep", Config.for_world("sd15-tiny").world.extra} <= named
    ), install
    assert not extras.missing(tuple(m for e in named for m in extras.EXTRAS[e]))
    (tmp_path / "sweeps").symlink_to(ROOT / "sweeps")
    assert command.startswith("python ")
    env = dict(os.environ)
    for variable in ("DISTAR_PARTI_PROMPTS", "DISTAR_COCO_CAPTIONS", "DISTAR_HPS_PROMPTS"):
        env.pop(variable, None)
    done = subprocess.run(
        f"{shlex.quote(sys.executable)} {command.removeprefix('python ')}",
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path / "runs" / "table2", done.stdout
