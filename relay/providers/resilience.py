"""Relay's one retry layer, the circuit breaker and the fallback chain.

The SDKs' own retries are switched off (``max_retries=0``): retrying in two
layers multiplies attempts. Retries and fallbacks only happen before the first
content event; once text has reached the caller, a failure is reported, not
replayed. A fallback that cannot serve the request (a feature it lacks: its
pool refuses before any upstream call) is skipped with a status naming why,
so it never replaces the real failure with a misleading 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from relay.errors import (
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    RelayError,
    Unprocessable,
    UnsupportedFeature,
    as_relay_error,
)
from relay.events import status
from relay.request import ChatRequest
from relay.types import StreamOpener

__all__ = ["CircuitBreaker", "RetryPolicy", "retrying", "falls_back", "with_fallback"]

EventStream = AsyncIterator[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, as both SDKs do: ``uniform(0, min(base·2^n, max))``."""

    max_retries: int = 2
    base_s: float = 0.5
    max_s: float = 8.0
    # A Retry-After longer than this is not waited out: the error goes to the fallback chain.
    max_retry_after_s: float = 30.0

    def delay(self, attempt: int, error: RelayError) -> float | None:
        """Seconds to wait before retry ``attempt`` (0-based), or None when it should not be retried."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after_s else None
        return random.uniform(0, min(self.max_s, self.base_s * 2**attempt))


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``reset_s``, one probe at a time.

    Only provider-side failures (429, 5xx, timeouts, connection errors) count:
    a 400 says the caller erred, and proves the upstream alive.
    """

    def __init__(self, threshold: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.trips = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def record(self, error: RelayError | None) -> None:
        """Record an attempt's outcome: None for success."""
        self.probing = False
        if error is None or not error.retryable:
            self.failures = 0
            self.opened_at = None
            return
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                self.trips += 1
            self.opened_at = self.clock()

    def retry_in(self) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.opened_at + self.reset_s - self.clock())

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "trips": self.trips,
            "retry_in_s": round(self.retry_in(), 2),
        }


async def retrying(
    open_stream: Callable[[], EventStream],
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    label: str,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> EventStream:
    """Events from ``open_stream()``, retried on retryable errors until the first event has been yielded."""
    attempt = 0
    while True:
        if not breaker.allow():
            raise Overloaded(
                f"{label}: circuit open after {breaker.failures} consecutive failures",
                code="circuit_open",
                retry_after=breaker.retry_in() or None,
            )
        started = False
        try:
            async with contextlib.aclosing(open_stream()) as events:
                async for event in events:
                    started = True
                    yield event
        except RelayError as error:
            breaker.record(error)
            delay = None if started else policy.delay(attempt, error)
            if delay is None:
                raise
            attempt += 1
            yield status(
                "retrying", f"{label}: {error.error_type}; retry {attempt}/{policy.max_retries} in {delay:.2f}s"
            )
            await sleep(delay)
            continue
        breaker.record(None)
        return


def falls_back(error: RelayError) -> bool:
    """A caller's mistake fails the same on every provider; anything else may succeed elsewhere."""
    return not isinstance(error, InvalidRequest | PayloadTooLarge | Unprocessable)


async def with_fallback(
    request: ChatRequest, open_stream: StreamOpener
) -> AsyncIterator[tuple[ChatRequest, list[dict[str, Any]]]]:
    """(serving request, batch) pairs; before any content, a failed provider hands over to the next in the chain.

    When the chain runs out after skipped fallbacks, the last real failure is raised, not the skip.
    """
    chain = [request, *(request.retarget(target) for target in request.fallbacks)]
    failure: RelayError | None = None
    for position, attempt in enumerate(chain):
        started = False
        try:
            async with contextlib.aclosing(open_stream(attempt)) as batches:
                async for batch in batches:
                    started = started or any(event["type"] != "status" for event in batch)
                    yield attempt, batch
            return
        except Exception as exc:
            error = as_relay_error(exc)
            if started:
                raise
            skipped = failure is not None and isinstance(error, UnsupportedFeature)
            if not skipped:
                if not falls_back(error):
                    raise
                failure = error
            if position == len(chain) - 1:
                if skipped and failure is not None:
                    raise failure from None
                raise
            following = chain[position + 1]
            reason = (
                f"{attempt.provider} skipped ({error.message})"
                if skipped
                else f"{attempt.provider} failed ({error.error_type}: {error.message})"
            )
            # from here on, the next provider is the one serving
            yield following, [status("fallback", f"{reason}; falling back to {following.provider}")]
