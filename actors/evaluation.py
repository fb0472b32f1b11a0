"""Evaluation on Ray: cells go to the provider pools through Serve handles, one actor holds the rate buckets.

The driver (``relay eval``, or a notebook) runs the cells as asyncio tasks;
the work happens in the pool replicas (the shared pool, or a provider's
dedicated one), wherever Serve placed them on the cluster. A cell is one
call to its pool's ``complete``: the reply comes back whole, timed in the
pool, as one Ray item rather than one per token batch. The
``ProviderLimiterActor`` is one named, detached actor per cluster, so
concurrent evaluations against one provider share its rpm and tpm, and a
Retry-After seen by one pauses them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from pydantic import SecretStr
from ray import serve
from ray.actor import ActorHandle
from ray.serve.exceptions import RayServeException

from relay.config import ProviderConfig, RelaySettings
from relay.errors import as_relay_error
from relay.evaluation.api import Prepared, ScorerLike, default_out, prepare, provider_budgets, run_evaluation
from relay.evaluation.costs import PriceTable
from relay.evaluation.dataset import Row
from relay.evaluation.limits import ProviderRateLimits
from relay.evaluation.progress import Progress
from relay.evaluation.runner import EvalResult
from relay.evaluation.spec import EvalOptions
from relay.providers.whole import WholeReply, fold
from relay.request import ChatRequest

from .names import SHARED_POOL
from .placement import deploy_dedicated_pool
from .pools import PoolHandles

__all__ = [
    "ProviderLimiterActor",
    "ClusterProviderLimiter",
    "PoolReplies",
    "rate_limiter",
    "served_pools",
    "ensure_pools",
    "run_on_cluster",
    "aevaluate",
    "evaluate",
]

LIMITER_NAME = "relay-eval-limiter"
NAMESPACE = "serve"


@ray.remote(num_cpus=0)
class ProviderLimiterActor:
    """``ProviderRateLimits`` for the whole cluster; reservations answer at once with the wait, nobody parks here."""

    def __init__(self) -> None:
        self.limits = ProviderRateLimits()

    def configure(self, provider: str, rpm: float | None, tpm: float | None) -> None:
        self.limits.configure(provider, rpm, tpm)

    def reserve(self, provider: str, tokens: int, correction: int = 0) -> float:
        return self.limits.reserve(provider, tokens, correction)

    def settle(self, provider: str, reserved: int, used: int) -> None:
        self.limits.settle(provider, reserved, used)

    def pause(self, provider: str, seconds: float) -> None:
        self.limits.pause(provider, seconds)

    def snapshot(self) -> dict[str, Any]:
        return self.limits.snapshot()


def rate_limiter() -> ActorHandle:
    """The cluster's limiter, created by the first evaluation that asks; it outlives the drivers."""
    return ProviderLimiterActor.options(  # type: ignore[attr-defined,no-any-return]
        name=LIMITER_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class ClusterProviderLimiter:
    """The runner's ``ProviderLimiter`` over the actor."""

    def __init__(self, actor: ActorHandle | None = None) -> None:
        self.actor = actor if actor is not None else rate_limiter()

    async def configure(self, provider: str, rpm: float | None, tpm: float | None) -> None:
        await self.actor.configure.remote(provider, rpm, tpm)

    async def reserve(self, provider: str, tokens: int, correction: int = 0) -> float:
        return float(await self.actor.reserve.remote(provider, tokens, correction))

    async def settle(self, provider: str, reserved: int, used: int) -> None:
        await self.actor.settle.remote(provider, reserved, used)

    async def pause(self, provider: str, seconds: float) -> None:
        await self.actor.pause.remote(provider, seconds)


class PoolReplies:
    """The runner's ``complete`` over the pools' Serve handles: the path a session actor takes, minus the session.

    ``streamed``: each cell streams its pool's batches and folds them here, timed here, as cells did before
    the pools could answer whole (``benchmarks/bench_eval.py`` measures the two side by side).
    """

    def __init__(self, apps: dict[str, str], *, streamed: bool = False) -> None:
        self.apps = apps
        self.streamed = streamed
        self.pool_handles = PoolHandles()

    async def __call__(self, request: ChatRequest) -> WholeReply:
        pool_app = self.apps[request.provider]
        if self.streamed:
            return await fold(self.pool_handles.stream(pool_app, request))
        response = self.pool_handles.get(pool_app, request.provider).complete.remote(request)
        try:
            return await response  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            response.cancel()  # a stopped run stops its cells' upstream calls too
            raise
        except Exception as exc:
            raise as_relay_error(exc) from None  # the RelayError the pool raised, not Ray's wrapper of it


def running_pools() -> dict[str, str]:
    """provider_id → the Serve app whose dedicated pool deployment serves it, for every such pool up now."""
    try:
        status = serve.status()
    except RayServeException:
        # No Serve on this cluster yet: start it without an HTTP proxy, the evaluation needs none.
        serve.start(proxy_location="Disabled")
        status = serve.status()
    found: dict[str, str] = {}
    for app_name, app in status.applications.items():
        for deployment in app.deployments:
            if deployment.startswith("pool-") and deployment != SHARED_POOL:
                found.setdefault(deployment.removeprefix("pool-"), app_name)
    return found


async def served_pools() -> dict[str, str]:
    """provider_id → pool_app for every provider a Relay app on this cluster serves, shared ones too.

    Only a Relay app's directory knows which providers its shared pool serves (and their versions): it is asked.
    """
    try:
        status = await asyncio.to_thread(serve.status)
    except RayServeException:
        return {}
    found: dict[str, str] = {}
    for app_name, app in status.applications.items():
        if "SessionDirectory" not in app.deployments:
            continue
        directory = serve.get_deployment_handle("SessionDirectory", app_name=app_name)
        with contextlib.suppress(Exception):
            for provider in await asyncio.wait_for(directory.list_providers.remote(), timeout=10.0):
                found.setdefault(provider.provider_id, provider.pool_app)
    return found


def ensure_pools(
    providers: Sequence[str],
    configs: Sequence[ProviderConfig],
    settings: RelaySettings,
    served: dict[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Pools serving ``providers``: running ones (and ``served``) are used as they are, missing ones deployed.

    Returns (provider → pool_app, the apps deployed here). A deployed pool is a
    dedicated one with the key this process resolved, so replicas on other nodes
    need no environment, and the shared pool never sees a config only this driver knows.
    """
    by_id = {config.provider_id: config for config in configs}
    apps = running_pools() | (served or {})
    deployed = []
    for provider in providers:
        if provider in apps:
            continue
        config = by_id[provider]
        key = config.resolve_key()
        if key is not None:
            config = config.model_copy(update={"api_key": SecretStr(key)})
        apps[provider] = deploy_dedicated_pool(
            config, settings.coalesce_base_s, settings.coalesce_per_window, timeout_s=settings.pool_placement_timeout_s
        )
        deployed.append(apps[provider])
    return {provider: apps[provider] for provider in providers}, deployed


async def run_on_cluster(
    prepared: Prepared,
    *,
    settings: RelaySettings,
    options: EvalOptions | None = None,
    out: str | Path | None = None,
    prices: PriceTable | None = None,
    results_url: str | None = None,
    progress: Progress | None = None,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    keep_pools: bool = False,
) -> EvalResult:
    """Run a prepared evaluation through the pools; pools it had to deploy are removed after."""
    served = await served_pools()
    apps, deployed = await asyncio.to_thread(
        ensure_pools, sorted(prepared.providers), settings.providers, settings, served
    )
    try:
        return await run_evaluation(
            prepared,
            complete=PoolReplies(apps),
            limiter=ClusterProviderLimiter(),
            out=out or default_out(prepared.name),
            options=options,
            prices=prices,
            results_url=results_url,
            progress=progress,
            on_cell=on_cell,
            budgets=provider_budgets(settings.providers),
        )
    finally:
        if not keep_pools:
            for app in deployed:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(serve.delete, app)


async def aevaluate(
    dataset: str | Path | Sequence[dict[str, Any] | Row],
    providers: str | Sequence[str],
    *,
    settings: RelaySettings | None = None,
    scorers: Sequence[ScorerLike] = (),
    template: str | None = None,
    **kwargs: Any,
) -> EvalResult:
    """Evaluate on the Ray cluster this process is connected to (see ``run_on_cluster`` for the options)."""
    settings = settings or RelaySettings()
    prepared = prepare(dataset, providers, settings.providers, scorers, template)
    return await run_on_cluster(prepared, settings=settings, **kwargs)


def evaluate(
    dataset: str | Path | Sequence[dict[str, Any] | Row],
    providers: str | Sequence[str],
    *,
    address: str | None = None,
    **kwargs: Any,
) -> EvalResult:
    """The blocking API: connects to ``address`` (or starts a local Ray), runs ``aevaluate``, disconnects."""
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    try:
        return asyncio.run(aevaluate(dataset, providers, **kwargs))
    finally:
        if started:
            ray.shutdown()
