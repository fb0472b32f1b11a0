"""Wait until a condition holds: the one way tests synchronise with work running elsewhere.

A test waits for an event (a lease released, a run cancelled, a metric
exported), never for a fixed time: the condition is polled every
``interval_s`` and the test fails, saying ``what`` it waited for and the last
value seen, once ``timeout_s`` has passed. Timeouts are generous ceilings for
a loaded 2-core machine, not paces.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["await_until", "wait_until"]

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float = 0.01,
    what: str,
    done: Callable[[T], object] = bool,
) -> T:
    """Call ``probe`` until ``done(value)`` holds (by default: the value is truthy); return that value."""
    deadline = time.monotonic() + timeout_s
    while not done(value := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s; last value: {value!r}"
        time.sleep(interval_s)
    return value


async def await_until(
    probe: Callable[[], T | Awaitable[T]],
    *,
    timeout_s: float,
    interval_s: float = 0.01,
    what: str,
    done: Callable[[T], object] = bool,
) -> T:
    """``wait_until`` on an event loop: ``probe`` may be a coroutine function, and the loop runs between tries."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s; last value: {value!r}"
        await asyncio.sleep(interval_s)
