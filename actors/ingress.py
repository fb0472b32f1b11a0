"""The Serve ingress: the Starlette app from ``relay.app`` over a Ray-backed ``Backend``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from relay.app import build_app
from relay.backend import StoredSessions, Turn
from relay.config import ProviderConfig, RelaySettings
from relay.errors import Overloaded, as_relay_error
from relay.request import ChatRequest
from relay.store import open_store

from .provider_pool import ProviderPool, pool_name
from .session_actor import SessionMoved

__all__ = ["DisconnectOnCancel", "Ingress", "RayBackend", "registered_app_name"]

log = logging.getLogger("relay.ingress")


def registered_app_name(provider_id: str) -> str:
    return f"relay-provider-{provider_id}"


class RayBackend(StoredSessions):
    def __init__(self, settings: RelaySettings, directory: DeploymentHandle) -> None:
        self.settings = settings
        self.directory = directory
        self.store = open_store(settings.store_url)
        self.active = 0
        self._providers: list[ProviderConfig] | None = None

    async def providers(self, refresh: bool = False) -> list[ProviderConfig]:
        if self._providers is None or refresh:
            self._providers = await self.directory.list_providers.remote()
        return self._providers

    async def open_turn(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> Turn:
        config = next(p for p in await self.providers() if p.provider_id == request.provider)
        request.pool_app = config.pool_app
        request.load_hint = self.active + 1
        for _ in range(3):
            session_id, actor = await self.directory.activate.remote(session_id, user_id)
            stream = actor.chat.remote(session_id, request)
            try:
                first = await (await anext(stream))
            except StopAsyncIteration:
                first = []
            except SessionMoved:
                continue
            except ray.exceptions.RayActorError:
                await self.directory.forget.remote(session_id, actor)
                continue
            except BaseException:
                ray.cancel(stream)
                raise
            return Turn(session_id, self._batches(first, stream), self._closer(stream))
        raise Overloaded(f"Session '{session_id}' could not be activated; retry shortly", retry_after=1.0)

    async def _batches(self, first: list[dict[str, Any]], stream: Any) -> AsyncIterator[list[dict[str, Any]]]:
        self.active += 1
        try:
            yield first
            async for ref in stream:
                try:
                    yield await ref
                except ray.exceptions.RayActorError:
                    error = as_relay_error(RuntimeError("session actor died"))
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

    async def register_provider(self, config: ProviderConfig) -> None:
        app_name = registered_app_name(config.provider_id)
        pool = ProviderPool.options(
            name=pool_name(config.provider_id),
            num_replicas=config.num_replicas,
            max_ongoing_requests=config.max_ongoing_requests,
        )
        app = pool.bind(config, self.settings.coalesce_base_s, self.settings.coalesce_per_window)
        await asyncio.to_thread(serve.run, app, name=app_name, route_prefix=None)
        await self.directory.add_provider.remote(config.model_copy(update={"pool_app": app_name, "api_key": None}))
        self._providers = None

    async def stats(self) -> dict[str, Any]:
        sessions = await self.directory.stats.remote()
        status = serve.status()
        pools = []
        for provider in await self.providers(refresh=True):
            app = status.applications.get(provider.pool_app or "")
            deployment = app.deployments.get(pool_name(provider.provider_id)) if app else None
            replicas = deployment.replica_states.get("RUNNING", 0) if deployment else 0
            pools.append(
                {
                    "provider_id": provider.provider_id,
                    "provider_type": provider.provider_type,
                    "app": provider.pool_app,
                    "replicas": replicas,
                    "status": str(deployment.status.value) if deployment else "MISSING",
                }
            )
        return {"sessions": sessions, "providers": pools, "ingress_active_streams": self.active}


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=1024)
@serve.ingress()
class Ingress:
    def __init__(
        self, settings: RelaySettings, directory: DeploymentHandle, pools: dict[str, DeploymentHandle]
    ) -> None:
        self.backend = RayBackend(settings, directory)
        # Bound pools become deployments of this app; the session actors look them up by name.
        self.pools = pools

    def __serve_build_asgi_app__(self) -> DisconnectOnCancel:
        return DisconnectOnCancel(build_app(self.backend))


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
