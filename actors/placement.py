"""Deploying a dedicated pool that fails in bounded time, naming what Ray lacks, instead of hanging.

Serve waits forever for a replica Ray cannot place (no CPU left, no node with a
custom resource), and ``serve.run`` with it: registration used to hang. Here a
replica no node could ever hold is refused before anything is deployed, and a
replica still unplaced after ``timeout_s`` has its half-made app removed.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import serve
from ray.serve.api import _run

from relay.config import ProviderConfig
from relay.errors import Overloaded, ProviderError

from .names import pool_name, registered_app_name
from .provider_pool import ProviderPool

__all__ = ["POOL_CPUS", "deploy_dedicated_pool", "dedicated_options", "replica_resources"]

# CPU one pool replica reserves for scheduling: it mostly waits on upstreams. 0.1 lets a 2-core laptop place the
# ingress and the shared pool at their autoscaling maxima (4 replicas each: 0.8) and still a few dedicated pools.
POOL_CPUS = 0.1


def replica_resources(config: ProviderConfig) -> dict[str, float]:
    """What one replica of the provider's dedicated pool asks Ray for (``CPU`` in actor_resources overrides)."""
    return {"CPU": POOL_CPUS} | config.actor_resources


def dedicated_options(config: ProviderConfig, pool_autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """``ProviderPool.options`` for the provider: its name, placement, and replicas or autoscaling."""
    resources = replica_resources(config)
    custom = {name: amount for name, amount in resources.items() if name != "CPU"}
    autoscaling = config.autoscaling_config or (None if config.num_replicas else pool_autoscaling)
    replicas = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": config.num_replicas or 1}
    return {
        "name": pool_name(config.provider_id),
        "max_ongoing_requests": config.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": resources["CPU"], **({"resources": custom} if custom else {})},
        **replicas,
    }


def _short(required: dict[str, float], have: dict[str, float]) -> dict[str, str]:
    lacking = {name: amount for name, amount in required.items() if have.get(name, 0) < amount}
    return {name: f"{amount:g} (has {have.get(name, 0):g})" for name, amount in lacking.items()}


def _unplaceable(required: dict[str, float]) -> dict[str, str] | None:
    """What the best node lacks when no alive node could hold one replica even empty; None when one could."""
    shortfalls = [_short(required, node["Resources"]) for node in ray.nodes() if node["Alive"]]
    return None if any(not s for s in shortfalls) else min(shortfalls, key=len, default=_short(required, {}))


def deploy_dedicated_pool(
    config: ProviderConfig, coalesce_base_s: float, coalesce_per_window: float, *, timeout_s: float
) -> str:
    """Deploy the provider's own pool as its own Serve app (blocking, at most ~timeout_s); returns the app name."""
    required = replica_resources(config)
    lacking = _unplaceable(required)
    if lacking is not None:
        raise Overloaded(
            f"Pool for '{config.provider_id}' cannot be placed: no node has {_describe(lacking)} per replica",
            param="actor_resources",
        )
    app_name = registered_app_name(config.provider_id)
    pool = ProviderPool.options(**dedicated_options(config, None))
    deadline = time.monotonic() + timeout_s  # before _run: it waits for the deployment to exist (seconds, loaded)
    _run(pool.bind(config, coalesce_base_s, coalesce_per_window), _blocking=False, name=app_name, route_prefix=None)
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        state = status.status.value if status else "NOT_STARTED"
        if state == "RUNNING":
            return app_name
        if state in ("DEPLOY_FAILED", "UNHEALTHY"):
            serve.delete(app_name)
            raise ProviderError(f"Pool for '{config.provider_id}' failed to start: {status.message if status else ''}")
        time.sleep(0.25)
    free = _short(required, ray.available_resources())
    # Not blocking: Serve takes ~20 s more to stop a replica it never placed, and the caller has waited enough.
    serve.delete(app_name, _blocking=False)
    raise Overloaded(
        f"Pool for '{config.provider_id}' was not placed within {timeout_s:g} s: each replica needs "
        f"{_describe(free) if free else required}; removed, retry when resources free up",
        param="actor_resources",
        retry_after=timeout_s,
    )


def _describe(lacking: dict[str, str]) -> str:
    return ", ".join(f"{name} {amount}" for name, amount in lacking.items())
