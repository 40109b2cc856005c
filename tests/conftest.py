import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
