"""An in-process ``Backend``: the same sessions, adapters and store, without Ray.

It backs the fast HTTP tests and shows what each Ray actor wraps.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict, NotFound
from relay.providers.catalog import ProviderCatalog
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest, Target
from relay.session.backend import RunStream, StoredSessions
from relay.session.balancer import Balancer
from relay.session.runlog import RunNotLive
from relay.session.session import Session
from relay.spend import PriceTable
from relay.store import Store, open_store
from relay.types import Batches

__all__ = ["LocalBackend"]


class LocalBackend(StoredSessions):
    def __init__(self, settings: RelaySettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.store_url)
        self.configs = list(settings.providers)
        self.gauge = LoadGauge(settings.coalesce_base_s, settings.coalesce_per_window)
        self.registry = ProviderCatalog(self.store, settings)
        self.configs += self.registry.load()
        self.runtimes = {c.provider_id: ProviderRuntime(c, self.gauge) for c in self.configs}
        self.sessions: dict[str, Session] = {}
        self._loading: dict[str, asyncio.Future[Session]] = {}  # sessions being read back, each once
        self.prices = PriceTable.load(settings.prices)
        # One process: the pools' counters are right here, fresh on every pick.
        self.balancer = Balancer(self._pool_stats, stats_ttl_s=0.0)

    async def providers(self, refresh: bool = False) -> list[ProviderConfig]:
        return self.configs

    async def _pool_stats(self, target: Target) -> dict[str, Any] | None:
        runtime = self.runtimes.get(target.provider)
        return runtime.stats() if runtime is not None else None

    def _open_stream(self, request: ChatRequest) -> Batches:
        return self.runtimes[request.provider].stream(request)

    async def _activate(self, session_id: str | None, user_id: str) -> Session:
        """A live session as is; else its row claimed (or created) and the session loaded once, however many calls
        for it arrive while the store answers off the loop."""
        if session_id is None:
            session_id, new = (await self.store.offload(self.store.create_session, user_id))["session_id"], True
        elif (live := self.sessions.get(session_id)) is not None:
            return self._owned(live, user_id)
        else:
            new = await self.store.offload(self.store.claim_session, session_id, user_id)
        if (live := self.sessions.get(session_id)) is not None:  # loaded by another call meanwhile
            return self._owned(live, user_id)
        loading = self._loading.get(session_id)
        if loading is None:
            loading = self._loading[session_id] = asyncio.ensure_future(self._load(session_id, user_id, new))
            loading.add_done_callback(lambda _: self._loading.pop(session_id, None))
        return self._owned(await asyncio.shield(loading), user_id)

    async def _load(self, session_id: str, user_id: str, new: bool) -> Session:
        session = Session(self.store, session_id, user_id, self.settings.context, self.balancer, self.prices)
        if not new:
            await self.store.offload(self.store.interrupt_running, session_id)
            await session.restore()
        self.sessions[session_id] = session
        return session

    @staticmethod
    def _owned(session: Session, user_id: str) -> Session:
        if session.user_id != user_id:
            raise NotFound(f"Session '{session.session_id}' not found", param="session_id")
        return session

    async def open_run(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> RunStream:
        session = await self._activate(session_id, user_id)
        batches = session.chat(request, self._open_stream)

        async def close() -> None:
            with contextlib.suppress(RuntimeError):
                await batches.aclose()

        return RunStream(session.session_id, batches, close)

    async def tail(self, session_id: str, run_id: str, after: int) -> Batches:
        session = self.sessions.get(session_id)
        if session is None:
            raise RunNotLive(run_id)
        tail = session.tail(run_id, after)
        first = await anext(tail, None)  # RunNotLive surfaces here, before the response starts

        async def batches() -> Batches:
            if first is not None:
                yield first
            async for batch in tail:
                yield batch

        return batches()

    async def cancel_run(self, session_id: str, run_id: str) -> bool:
        session = self.sessions.get(session_id)
        return session is not None and session.cancel(run_id)

    async def evict(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is not None and session.busy:
            raise Conflict(f"Session '{session_id}' has a turn running; retry when it ends", param="session_id")
        self.sessions.pop(session_id, None)

    async def register_provider(self, config: ProviderConfig) -> None:
        runtime = ProviderRuntime(config, self.gauge)
        if runtime.unavailable is not None:
            raise runtime.unavailable
        self.registry.save(config)
        self.runtimes[config.provider_id] = runtime
        self.configs.append(config)

    async def unregister_provider(self, provider_id: str) -> None:
        self.registry.delete(provider_id)
        self.configs = [c for c in self.configs if c.provider_id != provider_id]
        await self.runtimes.pop(provider_id).aclose()

    async def provider_health(self) -> list[dict[str, Any]]:
        return [await runtime.health() | {"replicas": 1} for runtime in self.runtimes.values()]

    async def ready(self) -> dict[str, Any]:
        """In-process every configured pool is its runtime, there from the start."""
        return {
            "directory": "ok",
            "pools": [{"provider_id": pid, "replicas": 1, "status": "RUNNING"} for pid in self.runtimes],
        }

    async def stats(self) -> dict[str, Any]:
        return {
            "sessions": {
                "live": len(self.sessions),
                "pooled": 0,
                "stored": await self.store.offload(self.store.count_sessions),
            },
            "providers": [runtime.stats() | {"replicas": 1} for runtime in self.runtimes.values()],
        }
