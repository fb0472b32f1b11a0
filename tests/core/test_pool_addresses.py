"""Where a provider's pool runs: shared unless asked otherwise, and the address its calls carry."""

from __future__ import annotations

from actors.names import SHARED_POOL, PoolAddress, shared_pool_app
from actors.placement import POOL_CPUS, dedicated_options, replica_resources
from relay.config import ProviderConfig


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
