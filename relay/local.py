"""An in-process ``Backend``: the same sessions, adapters and store, without Ray.

It backs the fast HTTP tests and shows what each Ray actor wraps.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from .backend import StoredSessions, Turn
from .coalesce import LoadGauge, coalesce
from .config import ProviderConfig, RelaySettings
from .errors import NotFound
from .providers import BaseProviderAdapter, create_adapter
from .request import ChatRequest
from .session import Session
from .store import SQLiteStore, open_store

__all__ = ["LocalBackend"]


class LocalBackend(StoredSessions):
    def __init__(self, settings: RelaySettings, store: SQLiteStore | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.store_url)
        self.configs = list(settings.providers)
        self.adapters: dict[str, BaseProviderAdapter] = {c.provider_id: create_adapter(c) for c in self.configs}
        self.sessions: dict[str, Session] = {}
        self.gauge = LoadGauge(settings.coalesce_base_s, settings.coalesce_per_window)

    async def providers(self, refresh: bool = False) -> list[ProviderConfig]:
        return self.configs

    def _open_stream(self, request: ChatRequest) -> AsyncIterator[list[dict[str, Any]]]:
        adapter = self.adapters[request.provider]
        adapter.check_features(request)
        return coalesce(adapter.stream_chat(request), self.gauge)

    def _activate(self, session_id: str | None, user_id: str) -> Session:
        if session_id is None:
            session_id = self.store.create_session(user_id)["session_id"]
        elif session_id not in self.sessions:
            if self.store.get_session(session_id) is None:
                self.store.create_session(user_id, session_id)
            self.store.owned_session(session_id, user_id)
            self.store.interrupt_running(session_id)
        session = self.sessions.setdefault(session_id, Session(self.store, session_id, user_id))
        if session.user_id != user_id:
            raise NotFound(f"Session '{session_id}' not found", param="session_id")
        return session

    async def open_turn(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> Turn:
        session = self._activate(session_id, user_id)
        batches = session.chat(request, self._open_stream)

        async def close() -> None:
            with contextlib.suppress(RuntimeError):
                await batches.aclose()

        return Turn(session.session_id, batches, close)

    async def register_provider(self, config: ProviderConfig) -> None:
        self.adapters[config.provider_id] = create_adapter(config)
        self.configs.append(config)

    async def stats(self) -> dict[str, Any]:
        return {
            "sessions": {"live": len(self.sessions), "pooled": 0, "stored": self.store.count_sessions()},
            "providers": [{"provider_id": c.provider_id, "replicas": 1} for c in self.configs],
        }
