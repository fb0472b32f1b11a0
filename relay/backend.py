"""What the HTTP app needs from the runtime: the seam between Starlette and Ray.

``actors.ingress.RayBackend`` implements it on a cluster; ``relay.local.LocalBackend``
implements it in-process, so the HTTP surface is testable without Ray.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .config import ProviderConfig
from .request import ChatRequest
from .store import SQLiteStore

__all__ = ["Backend", "StoredSessions", "Turn"]


@dataclass(slots=True)
class Turn:
    session_id: str
    batches: AsyncIterator[list[dict[str, Any]]]
    close: Callable[[], Awaitable[None]]


class Backend(Protocol):
    async def providers(self, refresh: bool = False) -> list[ProviderConfig]: ...

    async def open_turn(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> Turn: ...

    async def messages(
        self, session_id: str, user_id: str, *, limit: int | None, before: int | None
    ) -> list[dict[str, Any]]: ...

    async def runs(self, session_id: str, user_id: str) -> list[dict[str, Any]]: ...

    async def register_provider(self, config: ProviderConfig) -> None: ...

    async def stats(self) -> dict[str, Any]: ...


class StoredSessions:
    """The read side every backend shares: history and runs come from the store, owner checked."""

    store: SQLiteStore

    async def messages(
        self, session_id: str, user_id: str, *, limit: int | None, before: int | None
    ) -> list[dict[str, Any]]:
        self.store.owned_session(session_id, user_id)
        return self.store.messages(session_id, limit=limit, before=before)

    async def runs(self, session_id: str, user_id: str) -> list[dict[str, Any]]:
        self.store.owned_session(session_id, user_id)
        return self.store.runs(session_id)
