"""A run's numbered events while it streams: what a reconnecting client resumes from.

Every event of a run gets an increasing ``id`` (1, 2, …). The live log sits in
the session (on its actor), so a reconnect through any ingress replica finds
it; when the run ends the events are stored with it and replay from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["RunLog", "RunNotLive"]


class RunNotLive(Exception):
    """The run is not streaming here (finished, or its session moved): replay it from the store."""


class RunLog:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self.done = False
        self._waiter: asyncio.Future[None] | None = None  # created only while a tail waits: adding stays cheap

    def add(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Number the batch's events, keep them, and wake the tails; returns the batch."""
        for event in batch:
            event["id"] = len(self.events) + 1
            self.events.append(event)
        self._wake()
        return batch

    def close(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def tail(self, after: int) -> AsyncIterator[list[dict[str, Any]]]:
        """The events after ``after``, then the live ones as they come, until the run ends."""
        while True:
            if len(self.events) > after:
                batch = self.events[after:]
                after = len(self.events)
                yield batch
                continue
            if self.done:
                return
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)
