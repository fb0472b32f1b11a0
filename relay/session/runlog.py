"""A run's numbered events while it streams: what a reconnecting client resumes from.

Every event of a run gets an increasing ``id`` (1, 2, …). The live log sits in
the session (on its actor), so a reconnect through any ingress replica finds
it; when the run ends the events are stored with it and replay from the store.

A client resumes from a ``Cursor``: the last ``id`` it saw, ``N`` (every event up
to N) or, from a ``chunked`` stream, ``N:k`` (k characters into event N's text).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from relay.types import Batches

__all__ = ["Cursor", "RunLog", "RunNotLive"]

_CURSOR = re.compile(r"(\d{1,12})(?::(\d{1,12}))?")


class RunNotLive(Exception):
    """The run is not streaming here (finished, or its session moved): replay it from the store."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a client got: ``event`` whole events, then ``chars`` characters of the next one's text."""

    event: int = 0
    chars: int = 0

    @classmethod
    def parse(cls, value: str | int) -> Cursor:
        """``N`` or ``N:k`` as an event id carries it; ``ValueError`` for anything else."""
        match = _CURSOR.fullmatch(str(value))
        if match is None or (match[2] is not None and int(match[1]) < 1):
            raise ValueError(f"not an event id: {value!r}")
        event, chars = int(match[1]), int(match[2] or 0)
        return cls(event - 1, chars) if match[2] is not None else cls(event)

    async def skip_seen(self, batches: Batches) -> Batches:
        """``batches`` (the events after ``event``) less the characters of the first one already seen."""
        chars = self.chars
        async for batch in batches:
            if chars and batch:
                first = batch[0]
                if first["type"] == "text-delta":
                    rest = first["content"][chars:]
                    batch = ([first | {"content": rest}] if rest else []) + batch[1:]
                chars = 0
            if batch:
                yield batch


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

    async def tail(self, after: int) -> Batches:
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
