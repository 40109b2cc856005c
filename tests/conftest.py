import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# MLflow 3's server starts its job runner and 7 job consumers (server-side GenAI jobs, which
# distar never runs) by default: ~15 s of CPU and ~3 s more before /health answers, for each
# of the suite's servers (sweeps/cluster_node.sh turns them off on the head the same way)
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

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


def pytest_collection_modifyitems(items):
    """The modules that use the session's Ray (``ray_address``) run last, in file order: that
    Ray starts with the first of them and idles through no other module (measured: an idle
    local Ray's 20 processes take ~3 CPU-s a minute, 5 % of a core, that the suite shares)."""
    on_ray = {item.module.__name__ for item in items if "ray_address" in item.fixturenames}
    items.sort(key=lambda item: item.module.__name__ in on_ray)  # stable: file order kept


def pytest_sessionfinish(session, exitstatus):
    if ray_state(USER_RAY) != _RAY_BEFORE:
        print(f"\nthe test run changed {USER_RAY}: a test's Ray left the suite's home")
        session.exitstatus = 1
    shutil.rmtree(SUITE_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """One stage-0 cache per test session, shared by every test that builds a world."""
    path = tmp_path_factory.mktemp("distar-cache")
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
