"""Load-adaptive coalescing of an event stream into batches.

A Ray hop carries about 1,000-1,400 items/s (DESIGN.md). A fixed 20 ms window
does nothing when tokens arrive every 20 ms, so the window here grows with the
number of streams the process carries: ``base * active / per_window``. The
whole process then emits at most about ``per_window / base`` items/s however
many streams it serves, while a lone stream flushes every token at once.
Terminal events (``finish``, ``error``) never wait. Under load (more than one
stream in the process), adjacent text (or reasoning) deltas of a batch become
one event: every later stage (the session's run log, the encoders, the client)
then pays per batch, not per token. A lone stream keeps one event per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relay.config import COALESCE_BASE_S, COALESCE_PER_WINDOW
from relay.events import TERMINAL_TYPES
from relay.types import Batches

__all__ = ["BASE_S", "PER_WINDOW", "LoadGauge", "coalesce", "merge_deltas"]

# The defaults, also those of RelaySettings (coalesce_base_s, coalesce_per_window): measured in benchmarks/README.md.
BASE_S = COALESCE_BASE_S
PER_WINDOW = COALESCE_PER_WINDOW


@dataclass(slots=True)
class LoadGauge:
    """Streams in flight in this process, shared by every stream it produces."""

    base_s: float = BASE_S
    per_window: float = PER_WINDOW
    active: int = 0

    def window(self, hint: int = 1) -> float:
        return self.base_s * max(self.active, hint) / self.per_window


_DONE = object()
_MERGEABLE = frozenset({"text-delta", "reasoning-delta"})


def _plain_delta(event: dict[str, Any]) -> str | None:
    """The type of a text or reasoning delta that carries nothing but its content; None for any other event."""
    return event["type"] if event["type"] in _MERGEABLE and len(event) == 2 else None


def merge_deltas(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join runs of plain text (or reasoning) deltas; every other event stays as it is."""
    merged: list[dict[str, Any]] = []
    for kind, run in itertools.groupby(batch, key=_plain_delta):
        if kind is None:
            merged.extend(run)
            continue
        events = list(run)
        joined = "".join(event["content"] for event in events)
        merged.append(events[0] if len(events) == 1 else {"type": kind, "content": joined})
    return merged


async def coalesce(
    source: AsyncIterator[dict[str, Any]], gauge: LoadGauge, hint: int = 1
) -> Batches:
    """Yield lists of events; the first event of a quiet stream goes out at once."""
    pending: list[dict[str, Any]] = []
    ready = asyncio.Event()
    failure: list[BaseException] = []

    async def pump() -> None:
        try:
            async for event in source:
                pending.append(event)
                ready.set()
        except Exception as exc:  # re-raised in the consumer, where the caller can see it
            failure.append(exc)
        finally:
            pending.append(_DONE)  # type: ignore[arg-type]
            ready.set()

    gauge.active += 1
    task = asyncio.create_task(pump())
    last_flush = 0.0
    try:
        while True:
            await ready.wait()
            wait = last_flush + gauge.window(hint) - time.monotonic()
            if wait > 0 and pending[-1] is not _DONE and pending[-1]["type"] not in TERMINAL_TYPES:
                await asyncio.sleep(wait)
            batch = pending[:]
            pending.clear()
            ready.clear()
            last_flush = time.monotonic()
            done = bool(batch) and batch[-1] is _DONE
            if done:
                batch.pop()
            if batch:
                yield merge_deltas(batch) if gauge.active > 1 and len(batch) > 1 else batch
            if done:
                if failure:
                    raise failure[0]
                return
    finally:
        gauge.active -= 1
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
