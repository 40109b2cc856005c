"""cluster.yaml stays a valid Ray cluster-launcher config (what `ray up` checks first), in both
its forms, and both hand every node command to sweeps/cluster_node.sh (tests/test_cluster_up.py
runs them for real)."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()
CLOUD = "\n".join(line[3:] for line in TEXT.splitlines() if line.startswith("#| "))


def validated(text: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(text))
    validate_config(config)  # raises on a schema violation
    return config


@pytest.mark.parametrize("form", ["local", "aws"])
def test_both_forms_pass_rays_schema_and_share_the_node_script(form):
    config = validated(TEXT if form == "local" else CLOUD)
    assert config["provider"]["type"] == form
    script = "bash ~/distar/sweeps/cluster_node.sh"
    assert f"{script} setup" in config["setup_commands"]
    assert config["head_start_ray_commands"] == [f"{script} head"]
    assert config["worker_start_ray_commands"] == [f"{script} worker"]
    # the token, made where `ray up` runs, goes to every node; only what git would keep is synced
    mounts = {"~/distar": ".", "~/distar-cluster/ray_auth_token": "~/.ray/auth_token"}
    assert config["file_mounts"] == mounts
    assert config["rsync_filter"] == [".gitignore"] and "**/.git" in config["rsync_exclude"]
    if form == "aws":
        gpu = config["available_node_types"]["gpu_h100x8"]
        assert gpu["node_config"]["InstanceType"].startswith("p5") and gpu["max_workers"] >= 1
        assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}


def test_the_node_script_stops_only_what_it_started():
    script = (ROOT / "sweeps" / "cluster_node.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "ray stop" not in code and "pkill" not in code and "killall" not in code
    assert "RAY_AUTH_MODE=token" in code and "--allowed-hosts" in code
    assert "--dashboard-host=127.0.0.1" in code and '--host "$ip"' in code
    for ignored in (".venv/", "runs/", "mlruns/", "test-artifacts/"):
        assert ignored in (ROOT / ".gitignore").read_text().splitlines()
