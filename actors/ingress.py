"""The Serve ingress: the Starlette app from ``relay.http.app`` over a Ray-backed ``Backend``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from relay.config import ProviderConfig, RelaySettings
from relay.errors import Overloaded, RelayError
from relay.http.app import build_app
from relay.logs import configure_logging
from relay.request import ChatRequest
from relay.session.backend import RunStream, StoredSessions
from relay.session.runlog import RunNotLive
from relay.store import open_store
from relay.types import Batches

from .limiter import RemoteUserLimits, limiter_name
from .metrics import HttpMetrics, ingress_metrics
from .names import PoolAddress
from .partitions import DirectoryPartitions, mint_session_id
from .pools import PoolHandles
from .session_actor import SessionMoved

__all__ = ["DisconnectOnCancel", "Ingress", "RayBackend"]

log = logging.getLogger("relay.ingress")

# Placements remembered per ingress replica; an evicted one costs its next turn a directory call, nothing more.
MAX_PLACEMENTS = 100_000
REPORT_INTERVAL_S = 5.0  # Ray's metrics agent exports every few seconds; gauges need not change faster
# How long an ingress replica trusts its list of providers: a registration, update or delete made through another
# replica reaches this one within it (an unknown provider refreshes at once, relay.http.gateway.resolve).
PROVIDERS_TTL_S = 2.0


class RayBackend(StoredSessions):
    def __init__(self, settings: RelaySettings, directory: DirectoryPartitions) -> None:
        self.settings = settings
        self.directory = directory
        self.store = open_store(settings.store_url)
        self.active = 0
        self._providers: list[ProviderConfig] | None = None
        self._providers_read = 0.0
        self.pool_handles = PoolHandles()
        # Live sessions this replica has run: a turn of one calls its actor directly, not the directory (one Ray
        # round trip instead of two, and no single replica on every turn's path). The directory still owns
        # activation: a moved or dead placement sends the turn back to it (SessionMoved, RayActorError). The directory
        # is partitioned by session id (actors.partitions): every call about one session goes to its owner.
        self.placements: OrderedDict[str, tuple[ActorHandle, str]] = OrderedDict()

    async def providers(self, refresh: bool = False) -> list[ProviderConfig]:
        now = time.monotonic()
        if self._providers is None or refresh or now - self._providers_read > PROVIDERS_TTL_S:
            self._providers = await self.directory.providers.list_providers.remote()
            self._providers_read = now
        return self._providers

    async def open_run(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> RunStream:
        request.load_hint = self.active + 1
        # A new session's id is minted here, so that its first activation already goes to the partition owning it.
        new = session_id is None
        session_id = session_id or mint_session_id()
        for _ in range(5):
            placed = self.placements.get(session_id)
            activation = None
            if placed is not None and placed[1] == user_id:  # another user goes to the directory: a 404 there
                actor = placed[0]
                self.placements.move_to_end(session_id)
            else:
                owner = self.directory.owner(session_id)
                minted, new = new, False  # a retry may find the session stored: new on the first call only
                try:
                    if minted:
                        # Placed, not activated: this first chat activates it with the epoch (one round trip fewer).
                        actor, epoch = await owner.place.remote(session_id, user_id)
                        activation = (user_id, epoch)
                    else:
                        _, actor = await owner.activate.remote(session_id, user_id)
                except ray.exceptions.RayActorError:
                    # The partition's replica died during the call (its actors with it); Serve starts another, which
                    # this retry waits for.
                    continue
                self._place(session_id, actor, user_id)
            stream = actor.chat.remote(session_id, request, activation)
            try:
                first = await (await anext(stream))
            except StopAsyncIteration:
                first = []
            except SessionMoved:
                self.placements.pop(session_id, None)
                continue
            except ray.exceptions.RayActorError:
                await self._forget(session_id, actor)
                continue
            except BaseException:
                ray.cancel(stream)
                raise
            return RunStream(session_id, self._batches(session_id, actor, first, stream), self._closer(stream))
        raise Overloaded(f"Session '{session_id}' could not be activated; retry shortly", retry_after=1.0)

    async def _forget(self, session_id: str, actor: ActorHandle) -> None:
        """Drop a dead placement and tell its partition.

        A partition that died too (its actors die with it) has nothing to forget: its new replica starts empty.
        """
        self.placements.pop(session_id, None)
        with contextlib.suppress(ray.exceptions.RayActorError):
            await self.directory.owner(session_id).forget.remote(session_id, actor)

    def _place(self, session_id: str, actor: ActorHandle, user_id: str) -> None:
        self.placements[session_id] = (actor, user_id)
        self.placements.move_to_end(session_id)
        while len(self.placements) > MAX_PLACEMENTS:
            self.placements.popitem(last=False)

    async def _batches(self, session_id: str, actor: Any, first: list[dict[str, Any]], stream: Any) -> Batches:
        self.active += 1
        seen: list[str] = []  # the text this caller received, kept in case the actor dies with it
        try:
            batch = first
            while True:
                seen.extend(event["content"] for event in batch if event["type"] == "text-delta")
                yield batch
                try:
                    batch = await (await anext(stream))
                except StopAsyncIteration:
                    return
                except ray.exceptions.RayActorError:
                    # The actor (or its node) died mid-run: record what the caller saw, and answer like any failure.
                    await self.store.offload(self.store.interrupt_running, session_id, output="".join(seen))
                    await self._forget(session_id, actor)
                    error = RelayError("the session actor stopped mid-run; send the next message to continue")
                    yield [error.to_event(), {"type": "finish", "reason": "error"}]
                    return
        finally:
            self.active -= 1

    @staticmethod
    def _closer(stream: Any) -> Any:
        async def close() -> None:
            # Dropping an ObjectRefGenerator does not stop the actor: cancel it explicitly.
            ray.cancel(stream)

        return close

    async def cancel_run(self, session_id: str, run_id: str) -> bool:
        actor = await self.directory.locate(session_id)
        if actor is None:
            return False
        try:
            return bool(await actor.cancel.remote(session_id, run_id))
        except ray.exceptions.RayActorError:
            return False

    async def tail(self, session_id: str, run_id: str, after: int) -> Batches:
        actor = await self.directory.locate(session_id)
        if actor is None:
            raise RunNotLive(run_id)
        stream = actor.tail.remote(session_id, run_id, after)
        try:
            first = await (await anext(stream))
        except StopAsyncIteration:
            first = []
        except (RunNotLive, ray.exceptions.RayActorError):
            raise RunNotLive(run_id) from None

        async def batches() -> Batches:
            try:
                if first:
                    yield first
                async for ref in stream:
                    yield await ref
            finally:
                ray.cancel(stream)

        return batches()

    async def evict(self, session_id: str) -> None:
        self.placements.pop(session_id, None)
        await self.directory.owner(session_id).evict.remote(session_id)

    async def register_provider(self, config: ProviderConfig) -> None:
        await self.directory.providers.register_provider.remote(config)
        self._providers = None

    async def unregister_provider(self, provider_id: str) -> None:
        await self.directory.providers.unregister_provider.remote(provider_id)
        self._providers = None

    async def provider_health(self) -> list[dict[str, Any]]:
        providers = await self.providers(refresh=True)
        replicas = {pool["provider_id"]: pool for pool in self._pool_status(providers)}

        async def check(provider: ProviderConfig) -> dict[str, Any]:
            try:
                health = await asyncio.wait_for(
                    self.pool_handles.health(provider.pool_app, provider.provider_id), timeout=10.0
                )
            except Exception as exc:
                health = {
                    "provider_id": provider.provider_id,
                    "provider_type": provider.provider_type,
                    "reachable": False,
                    "ok": False,
                    "error": f"pool did not answer: {type(exc).__name__}",
                }
            return health | {"replicas": replicas[provider.provider_id]["replicas"]}

        return list(await asyncio.gather(*(check(p) for p in providers)))

    @staticmethod
    def _pool_status(providers: list[ProviderConfig]) -> list[dict[str, Any]]:
        """Each provider's pool deployment as Serve reports it; a pool waiting for resources says so."""
        status = serve.status()
        pools = []
        for provider in providers:
            address = PoolAddress.of(provider.pool_app, provider.provider_id)
            app = status.applications.get(address.app)
            deployment = app.deployments.get(address.deployment) if app else None
            pool = {
                "provider_id": provider.provider_id,
                "provider_type": provider.provider_type,
                "app": address.app,
                "pool": address.deployment,
                "replicas": deployment.replica_states.get("RUNNING", 0) if deployment else 0,
                "status": str(deployment.status.value) if deployment else "MISSING",
            }
            # Serve's message names the resources after RAY_SERVE_SLOW_STARTUP_WARNING_S (30 s) unscheduled.
            if deployment is not None and deployment.replica_states.get("STARTING") and deployment.message:
                pool["waiting"] = deployment.message
            pools.append(pool)
        return pools

    async def ready(self) -> dict[str, Any]:
        try:
            providers, _ = await asyncio.wait_for(
                asyncio.gather(self.providers(refresh=True), self.directory.check()), timeout=5.0
            )
        except Exception as exc:
            return {"directory": f"did not answer: {type(exc).__name__}", "pools": []}
        # serve.status() blocks on the controller: off the event loop that carries the streams.
        return {"directory": "ok", "pools": await asyncio.to_thread(self._pool_status, providers)}

    async def stats(self) -> dict[str, Any]:
        sessions = await self.directory.stats()
        providers = await self.providers(refresh=True)
        pools = self._pool_status(providers)

        async def counters(provider: ProviderConfig) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(self.pool_handles.stats(provider.pool_app, provider.provider_id), 5.0)
            except Exception:
                return {}

        # one replica answers per provider: with several replicas these are that replica's counters
        for pool, numbers in zip(pools, await asyncio.gather(*map(counters, providers)), strict=True):
            pool.update({key: value for key, value in numbers.items() if key != "provider_id"})
        return {"sessions": sessions, "providers": pools, "ingress_active_streams": self.active}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=1024)
@serve.ingress()
class Ingress:
    def __init__(
        self, settings: RelaySettings, directory: list[DeploymentHandle], pools: dict[str, DeploymentHandle]
    ) -> None:
        """``directory``: a handle per partition, in partition order."""
        self.backend = RayBackend(settings, DirectoryPartitions(directory))
        # Bound pools become deployments of this app; the session actors look them up by name.
        self.pools = pools
        configure_logging([p.resolve_key() for p in settings.providers] + [os.environ.get(settings.admin_key_env)])
        self.limits = RemoteUserLimits(
            settings.limits,
            limiter_name(serve.get_replica_context().app_name),
            store_url=settings.store_url,
            warn_at=settings.budgets.warn_at,
        )
        self.limits.connect()

    def __serve_build_asgi_app__(self) -> HttpMetrics:
        return HttpMetrics(DisconnectOnCancel(build_app(self.backend, self.limits)), background=self._report)

    async def _report(self) -> None:
        """Every few seconds: the session and pool gauges, from the directory and Serve."""
        metrics = ingress_metrics()
        while True:
            try:
                sessions = await self.backend.directory.stats()
                for state in ("live", "pooled", "passivated"):
                    metrics.sessions.set(sessions.get(state, 0), tags={"state": state})
                providers = await self.backend.providers()
                for pool in await asyncio.to_thread(self.backend._pool_status, providers):
                    metrics.pool_replicas.set(pool["replicas"], tags={"provider": pool["provider_id"]})
                metrics.active_streams.set(self.backend.active)
            except Exception:
                log.warning("reading the session and pool gauges failed", exc_info=True)
            await asyncio.sleep(REPORT_INTERVAL_S)


class DisconnectOnCancel:
    """Serve cancels its receive task once a streamed response ends; that is a disconnect, not an error."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def guarded_receive() -> Message:
            try:
                return await receive()
            except ray.exceptions.TaskCancelledError:
                return {"type": "http.disconnect"}

        await self.app(scope, guarded_receive, send)
