"""The response cache's rows (``relay.session.cache`` decides what goes in): kept apart from the session tables."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["ResponseCacheRows"]


class ResponseCacheRows(abc.ABC):
    """One row per exact request on a cached route; ``Store`` supplies the statements."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def cache_get(self, cache_key: str, now: float) -> dict[str, Any] | None:
        """``{events, created_at}`` of an entry that has not expired, or None."""
        rows = self._rows(
            "SELECT events, created_at FROM response_cache WHERE cache_key = ? AND expires_at > ?", (cache_key, now)
        )
        return {"events": orjson.loads(rows[0]["events"]), "created_at": rows[0]["created_at"]} if rows else None

    def cache_put(
        self, cache_key: str, route: str, events: list[dict[str, Any]], now: float, ttl_s: float, max_entries: int
    ) -> None:
        """Store an entry, then drop the route's expired entries and its oldest beyond ``max_entries``."""
        self._write(
            "INSERT INTO response_cache (cache_key, route, events, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (cache_key) DO UPDATE SET events = excluded.events, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            (cache_key, route, orjson.dumps(events).decode(), now, now + ttl_s),
        )
        self._write("DELETE FROM response_cache WHERE route = ? AND expires_at <= ?", (route, now))
        self._write(
            "DELETE FROM response_cache WHERE route = ? AND cache_key NOT IN"
            " (SELECT cache_key FROM response_cache WHERE route = ? ORDER BY created_at DESC LIMIT ?)",
            (route, route, max_entries),
        )

    def cache_keys(self, route: str) -> list[str]:
        """The route's stored keys, newest first (what survives eviction)."""
        rows = self._rows("SELECT cache_key FROM response_cache WHERE route = ? ORDER BY created_at DESC", (route,))
        return [row["cache_key"] for row in rows]
