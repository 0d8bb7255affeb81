"""cluster.yaml passes Ray's own launcher validation offline, and broken copies are rejected."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.helpers import REPO

CLUSTER_YAML = REPO / "cluster.yaml"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def ray_validate(cfg: dict) -> dict:
    """What `ray up` does before touching AWS: schema, then defaults merge, then semantic checks."""
    jsonschema.validate(cfg, SCHEMA)
    full = prepare_config(copy.deepcopy(cfg))
    validate_config(full)
    return full


@pytest.fixture
def cfg() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation(cfg):
    full = ray_validate(cfg)
    nodes = full["available_node_types"]
    head = nodes[full["head_node_type"]]
    # The head runs no trials: Tune can place nothing that needs a CPU there.
    assert head["resources"]["CPU"] == 0
    assert head["max_workers"] == 0
    gpu_types = [n for n, t in nodes.items() if t["resources"].get("GPU", 0) >= 1]
    cpu_types = [
        n for n, t in nodes.items()
        if t["resources"].get("CPU", 0) > 0 and not t["resources"].get("GPU")
    ]
    assert gpu_types and cpu_types
    for name in gpu_types + cpu_types:
        assert 0 <= nodes[name]["min_workers"] <= nodes[name]["max_workers"]
    assert sum(nodes[n]["max_workers"] for n in gpu_types + cpu_types) <= full["max_workers"]


def test_every_node_installs_the_project_with_token_auth(cfg):
    full = ray_validate(cfg)
    mounted = set(full["file_mounts"].values())
    assert {"./envs", "./esper_rllib", "./tuning", "./pyproject.toml"} <= mounted
    assert "~/.ray/auth_token" in mounted
    head_cmds = full["head_setup_commands"]
    per_type = [t.get("worker_setup_commands", full["worker_setup_commands"])
                for t in full["available_node_types"].values()]
    for cmds in [head_cmds, *per_type]:
        text = "\n".join(cmds)
        assert "pip install -q -e ~/esper-rllib" in text
        assert "RAY_AUTH_MODE=token" in text
    for cmd in full["head_start_ray_commands"] + full["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token ray start" in cmd


# The cifar profile's learner takes a GPU unless told otherwise (--set gpus=0 for CPU nodes).
@pytest.mark.parametrize(("node_type", "gpus_per_trial", "overrides"), [
    ("gpu_worker", 1.0, {}), ("cpu_worker", 0.0, {"gpus": 0.0})])
def test_a_cifar_profile_trial_fits_on_one_worker_node(cfg, node_type, gpus_per_trial, overrides):
    """What `esper-rllib ablate --profile cifar --gpus-per-trial G` asks Ray for, against the
    resources the node type declares: Tune packs a trial's bundles onto one node if it can."""
    from ray.rllib.algorithms.ppo import PPO

    from esper_rllib.run.config import build_ppo_config, resolve_knobs
    from tuning.plan import plan_sweep

    plan = plan_sweep("value_head", "cifar", resolve_knobs, seeds=1, gpus_per_trial=gpus_per_trial,
                      overrides=overrides)
    request = PPO.default_resource_request(build_ppo_config(plan.base))
    need: dict = {}
    for bundle in request.bundles:
        for resource, amount in bundle.items():
            need[resource] = need.get(resource, 0) + amount
    node = cfg["available_node_types"][node_type]["resources"]
    assert need.get("GPU", 0) == pytest.approx(gpus_per_trial)
    for resource, amount in need.items():
        assert amount <= node.get(resource, 0) + 1e-9, (resource, amount, node)


def test_typo_key_is_rejected(cfg):
    cfg["available_node_types"]["gpu_worker"]["resourcez"] = cfg["available_node_types"][
        "gpu_worker"].pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        ray_validate(cfg)


def test_top_level_typo_is_rejected(cfg):
    cfg["max_worker"] = cfg.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        ray_validate(cfg)


def test_wrong_type_is_rejected(cfg):
    cfg["available_node_types"]["gpu_worker"]["max_workers"] = "four"
    with pytest.raises(jsonschema.ValidationError, match="'four' is not of type 'integer'"):
        ray_validate(cfg)


def test_min_workers_above_global_bound_is_rejected(cfg):
    cfg["available_node_types"]["gpu_worker"]["min_workers"] = cfg["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_validate(cfg)


def test_unknown_head_node_type_is_rejected(cfg):
    cfg["head_node_type"] = "headd"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_validate(cfg)
