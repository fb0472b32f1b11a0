"""The deployment files parse, pass the checks their tools apply, and agree with the app and with each other.

No cluster here: ``ray up``'s schema and defaults, Serve's config schema and ``serve build``
all run without one. ``tests/integration/test_deploy.py`` deploys ``config/serve.yaml`` on
a cluster of three nodes.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start
from ray.serve._private.build_app import build_app
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

import serve_app
from actors.deploy import RAY_ENV
from relay.config import RelaySettings

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def application(config: dict[str, Any]) -> dict[str, Any]:
    [app] = config["applications"]
    return app


def test_cluster_yaml_passes_the_checks_ray_up_applies() -> None:
    config = load("cluster.yaml")
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))  # with the provider's defaults filled in, as `ray up` does
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert config["file_mounts"] == {"~/relay": "."} and "pip install -q ~/relay" in config["setup_commands"]
    ray_version = re.search(r'"ray\[serve\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert ray_version and config["docker"]["image"] == f"rayproject/ray:{ray_version[1]}-py311-cpu"

    def ray_start_args(commands: list[str]) -> list[str]:
        [command] = [c for c in commands if "ray start" in c]
        exported = command.split("ray start", 1)[0]
        assert all(f"{key}={value}" in exported for key, value in RAY_ENV.items())  # before Ray starts
        args = shlex.split(command.split("ray start", 1)[1])
        ray_start.make_context("start", list(args))  # every flag is one `ray start` takes
        return args

    head = ray_start_args(config["head_start_ray_commands"])
    worker = ray_start_args(config["worker_start_ray_commands"])
    assert "--port=6380" in head and "--address=$RAY_HEAD_IP:6380" in worker  # the GCS port, not 6379
    assert "--dashboard-host=127.0.0.1" in head


def test_serve_yaml_is_a_serve_config_whose_args_are_relay_settings() -> None:
    config = load("config/serve.yaml")
    ServeDeploySchema.model_validate(config)
    app = application(config)
    settings = RelaySettings.model_validate(app["args"])
    assert settings.pool_autoscaling is not None
    AutoscalingConfig(**settings.pool_autoscaling)
    deployments = {d["name"]: d for d in app["deployments"]}
    ingress = deployments["Ingress"]
    assert ingress["num_replicas"] == "auto"
    autoscaling = AutoscalingConfig(**ingress["autoscaling_config"])
    # small enough for one machine: one replica of each until load asks for more
    assert autoscaling.min_replicas == 1 and settings.pool_autoscaling["min_replicas"] == 1
    assert ingress["max_ongoing_requests"] >= autoscaling.target_ongoing_requests
    assert deployments["SessionDirectory"]["num_replicas"] == 1  # the single owner of activation; never scaled
    # Relay is installed on every node: the runtime_env ships neither code nor secrets
    assert app["runtime_env"] == {}


def test_the_builder_shares_one_autoscaled_pool_and_keeps_dedicated_ones() -> None:
    args = application(load("config/serve.yaml"))["args"] | {
        "providers": [
            {"provider_id": "echo", "provider_type": "echo"},
            {"provider_id": "echo-2", "provider_type": "echo"},
            {"provider_id": "fixed", "provider_type": "echo", "num_replicas": 2, "max_ongoing_requests": 64},
            {
                "provider_id": "own",
                "provider_type": "echo",
                "autoscaling_config": {"min_replicas": 2, "max_replicas": 3},
            },
            {"provider_id": "pinned", "provider_type": "echo", "actor_resources": {"gpu_node": 0.01}},
            {"provider_id": "alone", "provider_type": "echo", "dedicated": True},
        ]
    }
    built = {d.name: d for d in build_app(serve_app.app(args), name="relay").deployments}
    # Two echo providers, one deployment: shared unless a provider asks for a pool of its own.
    dedicated = {"pool-fixed", "pool-own", "pool-pinned", "pool-alone"}
    assert set(built) == {"Ingress", "SessionDirectory", "pool-shared"} | dedicated
    shared = built["pool-shared"]._deployment_config
    assert shared.autoscaling_config.max_replicas == 4 and shared.autoscaling_config.target_ongoing_requests == 128
    assert built["pool-shared"].ray_actor_options["num_cpus"] == 0.1
    own = built["pool-own"]._deployment_config.autoscaling_config
    assert (own.min_replicas, own.max_replicas) == (2, 3)
    assert built["pool-pinned"].ray_actor_options["resources"] == {"gpu_node": 0.01}
    assert built["pool-alone"]._deployment_config.autoscaling_config.max_replicas == 4  # pool_autoscaling applies
    fixed = built["pool-fixed"]
    assert fixed._deployment_config.autoscaling_config is None and fixed.num_replicas == 2
    assert fixed._deployment_config.max_ongoing_requests == 64
    args["pool_autoscaling"] = None
    unscaled = {d.name: d for d in build_app(serve_app.app(args), name="relay").deployments}
    assert unscaled["pool-shared"]._deployment_config.autoscaling_config is None
    assert unscaled["pool-shared"].num_replicas == 1


@pytest.mark.timeout(180)
def test_serve_build_yields_the_application_serve_yaml_configures(tmp_path: Path) -> None:
    """``serve build`` takes a built application, never a builder: ``serve_app:default_app`` is ``app()``."""
    out = tmp_path / "built.yaml"
    serve = Path(sys.executable).parent / "serve"
    subprocess.run(
        [str(serve), "build", "serve_app:default_app", "-o", str(out)], cwd=ROOT, check=True, capture_output=True
    )
    built_config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(built_config)
    built, ours = application(built_config), application(load("config/serve.yaml"))
    assert built["route_prefix"] == ours["route_prefix"] == "/"
    assert built["import_path"].split(":")[0] == ours["import_path"].split(":")[0] == "serve_app"
    assert getattr(serve_app, ours["import_path"].split(":")[1]) is serve_app.app
    by_name = {d["name"]: d for d in built["deployments"]}
    pools = {f"pool-{p.provider_id}" for p in RelaySettings().providers if p.is_dedicated}
    assert set(by_name) == {"Ingress", "SessionDirectory", "pool-shared"} | pools
    # The file overrides the code only where it means to (replica counts, autoscaling), never its other options.
    for deployment in ours["deployments"]:
        code = by_name[deployment["name"]]  # Serve refuses overrides for a deployment the app lacks
        for key in ("max_ongoing_requests", "ray_actor_options"):
            if key in deployment:
                assert code[key] == deployment[key], (deployment["name"], key)


def test_rayservice_carries_serve_yaml_to_kuberay() -> None:
    manifest = load("config/rayservice.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    spec = manifest["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as one YAML string
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    theirs, ours = application(serve_config), application(load("config/serve.yaml"))
    assert theirs["args"]["store_url"].startswith("postgresql://")  # every pod must reach the same store
    RelaySettings.model_validate(theirs["args"])
    without_store = {key: value for key, value in theirs["args"].items() if key != "store_url"}
    assert without_store == {key: value for key, value in ours["args"].items() if key != "store_url"}
    assert {k: v for k, v in theirs.items() if k != "args"} == {k: v for k, v in ours.items() if k != "args"}
    assert serve_config["http_options"] == {"host": "0.0.0.0", "port": 8000}  # the Service reaches the pods

    cluster = spec["rayClusterConfig"]
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[serve]=={cluster['rayVersion']}" in pinned and cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    [workers] = cluster["workerGroupSpecs"]
    worker = workers["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    for container in (head, worker):  # keys come from a Secret, never from the manifest; env is Serve's tuning only
        assert container["envFrom"] == [{"secretRef": {"name": "relay-secrets"}}]
        assert {item["name"]: item["value"] for item in container["env"]} == RAY_ENV
    assert "api_key" not in spec["serveConfigV2"]
