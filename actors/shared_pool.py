"""``SharedPool``: one Serve deployment for every provider without a pool of its own.

A deployment per provider cost a process (~172 MB), 0.1 CPU reserved and 4-7 s per
registration; a 2-core node could not place a 19th (DESIGN.md, "Pools"). Here a
replica builds a provider's ``ProviderRuntime`` (SDK client, HTTP pool, breaker,
counters, coalescing gauge) the first time it serves it, and keeps it in Serve's
multiplexing LRU: every call carries ``<provider_id>@<version>`` as its multiplexed
model id, and Serve routes it to a replica that already holds that runtime.

The config comes from the server's settings (configured providers) or from the
store (registered ones, key sealed), read when the runtime is built: registering
deploys nothing, and a replica that starts later reads the same store. A new
version is a new model id, so an update is built fresh on its next request.

Each provider keeps its own breaker, counters and coalescing gauge: a hanging or
failing upstream holds only its own streams, never a neighbour's flush window. It
also holds at most its ``max_ongoing_requests`` of a replica's slots; past them its
requests get a retryable 503 (then its fallbacks) while its neighbours keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from relay.config import ProviderConfig, RelaySettings
from relay.errors import NotFound, Overloaded
from relay.logs import configure_logging, set_request_id
from relay.providers.catalog import ProviderCatalog
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest
from relay.store import open_store
from relay.types import Batches

from .metrics import pool_metrics

__all__ = ["SharedPool"]

log = logging.getLogger("relay.shared_pool")

# Closing runtimes the LRU dropped: held here so that the loop does not collect a task before it ends.
_closing: set[asyncio.Task[None]] = set()


class _Held:
    """A provider's runtime in one replica; closed once the LRU has dropped it and its last stream has ended.

    Serve calls ``__del__`` when it evicts the runtime (from a thread); Python calls it again at collection.
    Closing waits for in-flight streams: eviction must not cut a stream that is still relaying.
    """

    def __init__(self, runtime: ProviderRuntime) -> None:
        self.runtime = runtime
        self.streams = 0
        self.evicted = False
        self.closed = False
        self.loop = asyncio.get_running_loop()

    def __del__(self) -> None:
        self.evicted = True
        if self.streams == 0:
            self._close()

    def release(self) -> None:
        self.streams -= 1
        if self.evicted and self.streams == 0:
            self._close()

    def _close(self) -> None:
        if self.closed or self.loop.is_closed():
            return
        self.closed = True
        runtime = self.runtime

        def start() -> None:
            task = asyncio.get_running_loop().create_task(runtime.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

        self.loop.call_soon_threadsafe(start)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=1024)
class SharedPool:
    def __init__(self, settings: RelaySettings) -> None:
        self.configured = {p.provider_id: p for p in settings.providers if not p.is_dedicated}
        configure_logging([p.resolve_key() for p in self.configured.values()])
        self.catalog = ProviderCatalog(open_store(settings.store_url), settings)
        self.coalesce = (settings.coalesce_base_s, settings.coalesce_per_window)

        async def build(model_id: str) -> _Held:
            return await self._build(model_id)

        # Wired at start, not as a class decorator: the LRU's bound is configuration (shared_pool settings).
        self._runtime = serve.multiplexed(max_num_models_per_replica=settings.shared_pool.max_providers_per_replica)(
            build
        )

    async def _build(self, model_id: str) -> _Held:
        provider_id = model_id.rpartition("@")[0]
        config: ProviderConfig | None = self.configured.get(provider_id)
        if config is None:
            config = await asyncio.to_thread(self.catalog.get, provider_id)  # the store may be PostgreSQL
        if config is None or config.is_dedicated:
            raise NotFound(f"Unknown provider '{provider_id}'", param="provider_id", code="provider_not_found")
        configure_logging([config.resolve_key()])  # only adds its key to what the logs redact
        return _Held(ProviderRuntime(config, LoadGauge(*self.coalesce), metrics=pool_metrics()))

    async def _held(self) -> _Held:
        return await self._runtime(serve.get_multiplexed_model_id())  # type: ignore[no-any-return]

    async def stream(self, request: ChatRequest) -> Batches:
        set_request_id(request.request_id)  # this call's own context: its log lines carry the ingress's id
        held = await self._held()
        limit = held.runtime.config.max_ongoing_requests
        if held.streams >= limit:
            raise Overloaded(
                f"Provider '{request.provider}' has {limit} streams on this replica (its max_ongoing_requests)",
                retry_after=1.0,
            )
        held.streams += 1
        try:
            async for batch in held.runtime.stream(request):
                yield batch
        finally:
            held.release()

    async def health(self) -> dict[str, Any]:
        return await (await self._held()).runtime.health()

    async def stats(self) -> dict[str, Any]:
        return (await self._held()).runtime.stats()
