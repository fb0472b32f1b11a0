"""A provider's whole reply as one result, for callers that never needed its tokens one by one (evaluation cells).

Streamed, every coalesced batch of a reply is one Ray item across the pool's hop, and a caller that keeps
only the finished text pays for each (benchmarks/README.md, "Evaluation"). ``complete`` runs the stream a
streamed call runs (``ProviderRuntime.stream``: features, retries, breaker, routing counters and metrics,
coalescing, tracing) and folds it where it runs, in the pool replica. The caller gets one
``WholeReply``, its TTFT and latency timed there, around the upstream stream rather than across the hop.

A failure raises the ``RelayError`` the stream raises. An ``error`` event that ends a stream without raising
(an invalid structured output) is the reply's ``error``, as ``relay.reply.Reply`` folds it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from relay.providers.runtime import ProviderRuntime
from relay.reply import Reply
from relay.request import ChatRequest
from relay.types import Batches

__all__ = ["Completer", "WholeReply", "complete", "fold"]

# What the first token is, for TTFT: a status (a retry, a fallback) or a usage event is not an answer yet.
_CONTENT = frozenset({"text-delta", "reasoning-delta", "tool-call-start", "audio", "image"})


@dataclass(slots=True)
class WholeReply:
    """The folded reply and its timing: milliseconds from the call to its first content, and to its end."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    ttft_ms: float | None = None
    latency_ms: float = 0.0


# A whole reply for one request: a pool's ``complete`` through its Serve handle, a runtime in one process.
Completer: TypeAlias = Callable[[ChatRequest], Awaitable[WholeReply]]


async def fold(batches: Batches, clock: Callable[[], float] = time.perf_counter) -> WholeReply:
    """The reply ``batches`` carry, timed from this call: TTFT at the first batch with content."""
    started = clock()
    ttft_ms: float | None = None
    reply = Reply()
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if ttft_ms is None and any(event["type"] in _CONTENT for event in batch):
                ttft_ms = (clock() - started) * 1000
            reply.extend(batch)
    return WholeReply(
        text=reply.content,
        tool_calls=reply.tool_call_list(),
        usage=dict(reply.usage),
        finish_reason=reply.finish_reason,
        error=reply.error,
        ttft_ms=ttft_ms,
        latency_ms=(clock() - started) * 1000,
    )


async def complete(runtime: ProviderRuntime, request: ChatRequest) -> WholeReply:
    """``request``'s whole reply from ``runtime``, counted and measured by it as a streamed call is."""
    return await fold(runtime.stream(request))
