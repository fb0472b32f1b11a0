"""Where a provider's pool runs: shared unless asked otherwise, and the address its calls carry."""

from __future__ import annotations

import pytest
from ray.serve._private.build_app import build_app

import serve_app
from actors.names import SHARED_POOL, PoolAddress, shared_pool_app
from actors.placement import POOL_CPUS, dedicated_options, replica_resources
from relay.config import ProviderConfig
from tests.core.test_deploy_config import application, load


def provider(**options: object) -> ProviderConfig:
    return ProviderConfig.model_validate({"provider_id": "p", "provider_type": "echo"} | options)


def test_a_provider_is_shared_unless_it_asks_for_a_pool_of_its_own() -> None:
    assert not provider().is_dedicated
    assert provider(dedicated=True).is_dedicated
    assert provider(num_replicas=2).is_dedicated
    assert provider(autoscaling_config={"min_replicas": 1, "max_replicas": 2}).is_dedicated
    assert provider(actor_resources={"gpu_node": 0.01}).is_dedicated


def test_a_shared_address_carries_the_provider_and_its_version_as_the_multiplexed_model_id() -> None:
    shared = PoolAddress.of(shared_pool_app("relay", "ab12"), "claude")
    assert shared == PoolAddress("relay", SHARED_POOL, "claude@ab12") and shared.shared
    # A new version is a new model id: replicas build the new config instead of serving the cached one.
    assert PoolAddress.of(shared_pool_app("relay", "cd34"), "claude").model_id != shared.model_id
    assert PoolAddress.of("relay-provider-own", "own") == PoolAddress("relay-provider-own", "pool-own", None)
    assert PoolAddress.of(None, "echo") == PoolAddress("relay", "pool-echo", None)


def test_a_dedicated_pool_asks_ray_for_its_resources_and_its_replicas() -> None:
    pinned = provider(actor_resources={"gpu_node": 0.01})
    assert replica_resources(pinned) == {"CPU": POOL_CPUS, "gpu_node": 0.01}
    options = dedicated_options(pinned, {"min_replicas": 1, "max_replicas": 4})
    assert options["ray_actor_options"] == {"num_cpus": POOL_CPUS, "resources": {"gpu_node": 0.01}}
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4}
    fixed = dedicated_options(provider(num_replicas=3, actor_resources={"CPU": 1}), {"max_replicas": 4})
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1}



def test_the_default_config_at_its_autoscaling_maxima_fits_a_two_core_laptop_with_fifty_providers() -> None:
    config = application(load("config/serve.yaml"))
    args = config["args"] | {"providers": [{"provider_id": f"p{i}", "provider_type": "echo"} for i in range(50)]}
    overrides = {d["name"]: d for d in config["deployments"]}
    reserved = 0.0
    for deployment in build_app(serve_app.app(args), name="relay").deployments:
        override = overrides.get(deployment.name, {})
        cpus = override.get("ray_actor_options", deployment.ray_actor_options)["num_cpus"]
        scaling = override.get("autoscaling_config") or deployment._deployment_config.autoscaling_config
        replicas = scaling["max_replicas"] if isinstance(scaling, dict) else getattr(scaling, "max_replicas", 1)
        reserved += cpus * replicas
    # The ingress and pool-shared at 4 replicas of 0.1 CPU, the directory at 0 (session actors too): 0.8 of 2
    # cores whatever the number of shared providers; the rest is room for dedicated pools.
    assert reserved == pytest.approx(0.8)
