import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory):
    """One stage-0 cache per test session, shared by every test that builds a world."""
    path = tmp_path_factory.mktemp("distar-cache")
    os.environ["DISTAR_CACHE"] = str(path)
    return path
