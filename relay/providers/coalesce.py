"""Load-adaptive coalescing of an event stream into batches.

A Ray hop carries about 1,000-1,400 items/s (DESIGN.md). A fixed 20 ms window
does nothing when tokens arrive every 20 ms, so the window here grows with the
number of streams the process carries: ``base * active / per_window``. The
whole process then emits at most about ``per_window / base`` items/s however
many streams it serves. Under light load (up to ``LIGHT_STREAMS`` streams) the
window is ``base * active`` instead, at most what 32 streams get anyway (160 ms
with the defaults): items cost the same CPU at every hop whatever the load, and
at 4-8 streams this halved Relay's CPU with the same time to first token
(benchmarks/README.md, lever 4). The first event of a quiet stream still goes
out at once, and a lone stream at 50 tokens/s still gets each token as it comes.
Terminal events (``finish``, ``error``) never wait, not even for the rest of a
window that started before them. Under load (more than one stream in the
process), adjacent text (or reasoning) deltas of a batch become one event: every
later stage (the session's run log, the encoders, the client) then pays per
batch, not per token. A lone stream keeps one event per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from relay.config import COALESCE_BASE_S, COALESCE_PER_WINDOW
from relay.events import TERMINAL_TYPES
from relay.types import Batches

__all__ = ["BASE_S", "LIGHT_STREAMS", "PER_WINDOW", "LoadGauge", "coalesce", "merge_deltas"]

# The defaults, also those of RelaySettings (coalesce_base_s, coalesce_per_window): measured in benchmarks/README.md.
BASE_S = COALESCE_BASE_S
PER_WINDOW = COALESCE_PER_WINDOW
# Up to this many streams the window is base x streams; then it stays there until base x streams / per_window
# overtakes it (at 32 streams with the defaults).
LIGHT_STREAMS = 8


@dataclass(slots=True)
class LoadGauge:
    """Streams in flight in this process, shared by every stream it produces."""

    base_s: float = BASE_S
    per_window: float = PER_WINDOW
    active: int = 0

    def window(self, hint: int = 1) -> float:
        streams = max(self.active, hint)
        return self.base_s * max(streams / self.per_window, min(streams, LIGHT_STREAMS))


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
    # Set by a terminal event or the source's end: a window already being waited out ends there, so the last
    # tokens and the finish never wait for the rest of it (up to 640 ms at 128 streams).
    ending = asyncio.Event()
    failure: list[BaseException] = []

    async def pump() -> None:
        try:
            async for event in source:
                pending.append(event)
                if event["type"] in TERMINAL_TYPES:
                    ending.set()
                ready.set()
        except Exception as exc:  # re-raised in the consumer, where the caller can see it
            failure.append(exc)
        finally:
            pending.append(_DONE)  # type: ignore[arg-type]
            ending.set()
            ready.set()

    gauge.active += 1
    task = asyncio.create_task(pump())
    last_flush = -math.inf  # the first event goes out at once
    try:
        while True:
            await ready.wait()
            wait = last_flush + gauge.window(hint) - time.monotonic()
            if wait > 0 and not ending.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await ending.wait()
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
