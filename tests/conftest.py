import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Ray keeps a user's state under ~/.ray: since Ray 2.60 the first local ray.init() writes
# ~/.ray/auth_token, and every later Ray session of that user then turns token authentication on
# (and warns). The suite's Ray state lives in a home of its own, set before anything starts Ray
# (every subprocess inherits it); pytest_sessionfinish fails the run if the user's ~/.ray changed
# anyway (a token written or rewritten), and removes the suite's home.
USER_HOME = Path.home()
USER_RAY = USER_HOME / ".ray"


def ray_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file under ``folder``: (size, mtime in ns)."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


_RAY_BEFORE = ray_state(USER_RAY)
SUITE_HOME = Path(tempfile.mkdtemp(prefix="distar-tests-home-"))
os.environ["HOME"] = str(SUITE_HOME)


def pytest_sessionfinish(session, exitstatus):
    if ray_state(USER_RAY) != _RAY_BEFORE:
        print(f"\nthe test run changed {USER_RAY}: a test's Ray left the suite's home")
        session.exitstatus = 1
    shutil.rmtree(SUITE_HOME, ignore_errors=True)


# Two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist loadgroup``): the modules that
# start Ray (a local one, nodes of their own, ``ray up``) run one after another in one of them,
# every other module in the other. On 2 cores a Ray module waits a quarter of its time (on
# processes starting, on a node lost or rejoining), which the other worker's computing fills:
# measured, test_faults beside test_fsdp 203 s against 256 s one after the other; two Ray
# modules at once thrashed (all modules spread over both workers: 25:45 against 18-21 min).
# ``ray up`` comes last, by when the other worker is done: its faults run on a quiet machine.
RAY_MODULES = (
    "test_sweep",
    "test_mlflow_ui",
    "test_faults",
    "test_multinode",
    "test_stopped_trial_frees",
    "test_bad_inputs",
    "test_cluster_up",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Each test's xdist group: "ray" for the Ray modules (in RAY_MODULES' order), "rest"."""
    for item in items:
        ray = item.path.stem in RAY_MODULES
        item.add_marker(pytest.mark.xdist_group("ray" if ray else "rest"))

    def order(item):
        module = item.path.stem
        return RAY_MODULES.index(module) if module in RAY_MODULES else -1

    items.sort(key=order)  # stable: each module's tests keep their order


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory, worker_id):
    """One stage-0 cache per test run, shared by every test that builds a world, in both xdist
    workers (its directories are written under a file lock and renamed into place)."""
    root = tmp_path_factory.getbasetemp()
    path = (root.parent if worker_id != "master" else root) / "distar-cache"
    path.mkdir(exist_ok=True)
    os.environ["DISTAR_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_address(world_cache):
    import ray

    from distar.runtime.local_ray import start_local_ray  # sets Ray Train's report interval too

    start_local_ray(num_cpus=4)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def readme_sd15_smoke(ray_address, tmp_path_factory):
    """The README's sd15-tiny smoke grid (4 trials through Ray), run once as written: the MLflow
    UI test serves it and the sweep test reads its store, report and console (its storage, its
    console output). Read only: neither test writes into it."""
    from sweeps_common import readme_sd15_tiny_smoke

    return readme_sd15_tiny_smoke(tmp_path_factory.mktemp("readme-sd15-tiny"))


@pytest.fixture(scope="session")
def gmm_smoke(ray_address, tmp_path_factory):
    """The embedded world's smoke grid (``ablation_grid.py --smoke-test`` with the tiny
    settings: 2 rows x 2 seeds), run once in this process through the session's Ray: the
    MLflow UI test serves it and the sweep test reads its store, trials and report. Returns its
    storage and console output. Read only: neither test writes into it."""
    import contextlib
    import io

    from sweeps_common import TINY, script

    storage = tmp_path_factory.mktemp("gmm-smoke") / "sweep"
    flags = [f"--set={k}={v}" for k, v in TINY.items()]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = script("ablation_grid")(["--smoke-test", "--storage", str(storage), *flags])
    assert code == 0, out.getvalue()[-3000:]
    return storage, out.getvalue()
