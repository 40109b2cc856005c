"""cluster.yaml stays a valid Ray cluster-launcher config (what `ray up` checks first)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    validate_config(config)  # raises on a schema violation
    assert config["provider"]["type"] == "local"
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "mlflow server" in head
    assert any(".[sweep,t2i]" in c for c in config["setup_commands"])


def test_the_commented_cloud_gpu_form_passes_rays_schema_too():
    from ray.autoscaler._private.util import prepare_config, validate_config

    lines = (ROOT / "cluster.yaml").read_text().splitlines()
    cloud = "\n".join(line[3:] for line in lines if line.startswith("#| "))
    config = prepare_config(yaml.safe_load(cloud))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    gpu = config["available_node_types"]["gpu_h100x8"]
    assert gpu["node_config"]["InstanceType"].startswith("p5") and gpu["max_workers"] >= 1
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "mlflow server" in head
