"""What the HTTP app needs from the runtime: the seam between Starlette and Ray.

``actors.ingress.RayBackend`` implements it on a cluster; ``relay.session.local_backend.LocalBackend``
implements it in-process, so the HTTP surface is testable without Ray.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from relay.config import ProviderConfig, RelaySettings
from relay.request import ChatRequest
from relay.store import Store
from relay.types import Batches

__all__ = ["Backend", "StoredSessions", "RunStream"]


@dataclass(slots=True)
class RunStream:
    session_id: str
    batches: Batches
    close: Callable[[], Awaitable[None]]


class Backend(Protocol):
    settings: RelaySettings

    async def providers(self, refresh: bool = False) -> list[ProviderConfig]: ...

    async def open_run(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> RunStream: ...

    store: Store

    async def delete_session(self, session_id: str, user_id: str) -> None:
        """Passivate the session if it is live (409 while a turn runs), then delete it from the store."""

    async def evict(self, session_id: str) -> None:
        """Take a live session out of memory (409 while a run runs), so that its next run reads the store."""

    async def cancel_run(self, session_id: str, run_id: str) -> bool:
        """Stop a running run wherever its session lives; False when it is not running there."""

    async def tail(self, session_id: str, run_id: str, after: int) -> Batches:
        """A running run's events after ``after``, then live; raises ``RunNotLive`` to send the caller to the store."""

    async def register_provider(self, config: ProviderConfig) -> None:
        """Deploy a pool for ``config`` and persist it (key sealed); it survives restarts."""

    async def unregister_provider(self, provider_id: str) -> None: ...

    async def provider_health(self) -> list[dict[str, Any]]:
        """``health_check_all``: per pool, reachability, latency, breaker state and replicas."""

    async def stats(self) -> dict[str, Any]: ...

    async def ready(self) -> dict[str, Any]:
        """``{"directory": "ok" or why not, "pools": [{provider_id, replicas, status}]}``: what ``/readyz`` judges."""


class StoredSessions:
    """What every backend shares: deletion goes through ``evict`` (the live copy) and then the store."""

    store: Store

    async def evict(self, session_id: str) -> None:
        raise NotImplementedError

    async def delete_session(self, session_id: str, user_id: str) -> None:
        await self.store.offload(self.store.owned_session, session_id, user_id)
        await self.evict(session_id)
        await self.store.offload(self.store.delete_session, session_id, user_id)
