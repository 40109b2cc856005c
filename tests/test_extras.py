"""A missing optional dependency is one line naming the extra to install, from every entry point,
before anything starts -- never a traceback. Each case runs the entry point in a fresh Python
with the extra's modules made unimportable (``sys.modules[name] = None``: ``import name`` then
fails as it does when the package is not installed, and ``find_spec`` finds nothing)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from distar.config import extras

ROOT = Path(__file__).resolve().parents[1]
RUN_BLOCKED = """
import runpy, sys
blocked, entry, *args = sys.argv[1:]
sys.modules.update({name: None for name in blocked.split(",")})
sys.argv = [entry, *args]
if entry.endswith(".py"):
    runpy.run_path(entry, run_name="__main__")
else:
    runpy.run_module(entry, run_name="__main__", alter_sys=True)
"""
GRID, SEARCH = "sweeps/ablation_grid.py", "sweeps/search.py"
CASES = [  # (blocked modules, entry point, its arguments, the extra, words the line must hold)
    ("diffusers,peft", GRID, ["--world", "sd15-tiny", "--smoke-test"], "t2i", "world 'sd15'"),
    ("diffusers", SEARCH, ["--world", "sdxl-tiny", "--smoke-test"], "t2i", "world 'sdxl'"),
    ("peft", "distar.cli.train", ["--world", "sd15-tiny", "--smoke-test"], "t2i", "world 'sd15'"),
    ("ray", GRID, ["--smoke-test"], "sweep", "a sweep"),
    ("optuna", SEARCH, ["--smoke-test"], "sweep", "a sweep"),
    (
        "transformers",
        "distar.cli.evaluate",
        ["--tiny", "--benchmark", "parti:2"],
        "eval",
        "transformers",
    ),
    ("mlflow", "analysis.report", ["--tracking-uri", "sqlite:///{tmp}/m.db"], "sweep", "mlflow"),
    (
        "mlflow",
        "analysis.compare",
        ["--tracking-uri", "sqlite:///{tmp}/m.db", "a", "b"],
        "sweep",
        "mlflow",
    ),
]


IDS = [f"{c[1]}-{c[0]}" for c in CASES]


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Every case's entry point, started at once: each is mostly one interpreter's imports on
    one core (~25 s one after another on 2 cores, ~14 s side by side). Yields, per case id,
    the process and the folder it must not create."""
    runs = {}
    try:
        for name, (blocked, entry, args, _, _) in zip(IDS, CASES, strict=True):
            tmp = tmp_path_factory.mktemp("extra")
            args = [a.replace("{tmp}", str(tmp)) for a in args]
            storage = tmp / "out"
            if entry in (GRID, SEARCH):
                args += ["--storage", str(storage)]
            elif entry == "distar.cli.train":
                args += ["--out", str(storage)]
            process = subprocess.Popen(
                [sys.executable, "-c", RUN_BLOCKED, blocked, entry, *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            runs[name] = (process, storage)
        yield runs
    finally:
        for process, _ in runs.values():
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            process.stderr.close()
            process.wait()


@pytest.mark.parametrize(("name", "case"), zip(IDS, CASES, strict=True), ids=IDS)
def test_a_missing_extra_is_one_line_naming_it(started, name, case):
    _, _, _, extra, words = case
    process, storage = started[name]
    _, stderr = process.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert process.returncode == 2, stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith("missing dependency: ") and words in lines[0], lines[0]
    assert lines[0].endswith(f'pip install -e ".[{extra}]"'), lines[0]
    assert not storage.exists()  # refused before anything started


def test_a_genuine_import_error_keeps_its_traceback():
    """Only an absent optional package is a refusal: a missing module of ours, or of an
    installed package, is a bug and must show where it happened."""
    for name in ("distar.no_such_module", "mlflow.no_such_module", "no_such_package"):
        assert extras.missing_extra(ModuleNotFoundError(name, name=name)) is None
    assert extras.missing_extra(ModuleNotFoundError("x", name="ray.tune")) is None  # installed


def requirement_names(extra: str, table: dict[str, list[str]]) -> set[str]:
    """The distributions ``pip install -e .[extra]`` brings, following ``distar[...]`` within
    (pip's own requirement parser and name normalisation)."""
    names: set[str] = set()
    for requirement in map(Requirement, table[extra]):
        if requirement.name == "distar":
            for inner in requirement.extras:
                names |= requirement_names(inner, table)
        else:
            names.add(canonicalize_name(requirement.name))
    return names


def test_each_extra_installs_the_modules_the_refusal_names():
    """The line tells the user to install an extra: that extra must bring every module it is
    named for (a module listed under the wrong extra would send the user round in circles)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = table["optional-dependencies"]
    base = {canonicalize_name(Requirement(d).name) for d in table["dependencies"]}
    for module, (extra, distribution) in extras.MODULES.items():
        assert canonicalize_name(distribution) in requirement_names(extra, optional), module
    for extra, modules in extras.EXTRAS.items():
        brought = requirement_names(extra, optional) | base
        for module in modules:
            assert canonicalize_name(extras.MODULES[module][1]) in brought, (extra, module)
