"""The response cache: opt-in per route, exact match, deterministic requests only.

The key is a SHA-256 over the route (the provider the caller asked for: a
route's pools are interchangeable), the model, the messages as the provider
receives them (history, summary and memories included), the tools and every
sampling parameter. Only a request at temperature 0 (the default on a cached
route) and with one choice is cached, and only a reply that finished cleanly in
one model call: errors, cut-off runs and runs that executed server-side tools
never are. Entries live in the store, so every replica and every node shares
them: SQLite on a laptop, PostgreSQL on a cluster.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from relay.config import CacheSettings
from relay.store import Store

__all__ = ["CachePolicy", "ResponseCache", "cacheable", "cache_key", "CACHED_TYPES"]

log = logging.getLogger("relay.session.cache")

# The events a cached reply replays. Usage is not among them: a hit costs no tokens, and its run says so.
CACHED_TYPES = frozenset(
    {"text-delta", "reasoning-delta", "tool-call-start", "tool-call-delta", "tool-call-end", "citation"}
)
_CLEAN_FINISH = frozenset({"stop", "length", "tool_calls"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What a cacheable request carries to its session: the route it is cached under and the limits."""

    route: str
    ttl_s: float
    max_entries: int
    max_entry_bytes: int

    @classmethod
    def of(cls, route: str, settings: CacheSettings) -> CachePolicy:
        return cls(route, settings.ttl_s, settings.max_entries, settings.max_entry_bytes)


def cacheable(params: dict[str, Any]) -> bool:
    """Deterministic: temperature 0 and a single choice."""
    return params.get("temperature") == 0 and params.get("n") in (None, 1)


def cache_key(
    route: str, model: str | None, messages: list[dict[str, Any]], params: dict[str, Any], options: dict[str, Any]
) -> str:
    material = {"route": route, "model": model, "messages": messages, "params": params, "options": options}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def replayable(events: list[dict[str, Any]], finish_reason: str | None) -> list[dict[str, Any]] | None:
    """The events worth storing for a reply, or None when it must not be cached."""
    if finish_reason not in _CLEAN_FINISH or any(event["type"] == "error" for event in events):
        return None
    kept = [{k: v for k, v in event.items() if k != "id"} for event in events if event["type"] in CACHED_TYPES]
    return [*kept, {"type": "finish", "reason": finish_reason}]


class ResponseCache:
    """Reads and writes entries; a store failure is logged and the run goes on uncached."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def get(self, key: str) -> tuple[list[dict[str, Any]], float] | None:
        """(events, age in seconds) of a live entry."""
        now = self.clock()
        try:
            entry = await self.store.offload(self.store.cache_get, key, now)
        except Exception:
            log.exception("reading the response cache failed; the request goes upstream")
            return None
        return (entry["events"], max(0.0, now - entry["created_at"])) if entry else None

    async def put(self, policy: CachePolicy, key: str, events: list[dict[str, Any]]) -> bool:
        """Store ``events`` (from ``replayable``) unless they are too big; True when stored."""
        if len(orjson.dumps(events)) > policy.max_entry_bytes:
            return False
        try:
            await self.store.offload(
                self.store.cache_put, key, policy.route, events, self.clock(), policy.ttl_s, policy.max_entries
            )
        except Exception:
            log.exception("writing the response cache failed; the reply was served uncached")
            return False
        return True
