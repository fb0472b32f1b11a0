"""A resumable run: it outlives a dropped caller for a while, so the caller can reconnect and resume.

A task of its own consumes the run. While a reader is attached, at most
``QUEUED_EVENTS`` (plus the batch in hand) wait for it, and then the run waits
too: a slow reader is backpressure, not memory. When the reader goes, the task
keeps draining the run, whose events the session's run log keeps for whoever
resumes, for up to ``RESUME_GRACE_S``; then the run is cancelled. ``stop``
cancels it at once.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable

from relay.types import Batch

__all__ = ["DetachedRun", "QUEUED_EVENTS", "RESUME_GRACE_S"]

QUEUED_EVENTS = 1024
RESUME_GRACE_S = 300.0


class DetachedRun:
    def __init__(
        self,
        batches: AsyncIterator[Batch],
        close: Callable[[], Awaitable[None]],
        *,
        grace_s: float = RESUME_GRACE_S,
        limit: int = QUEUED_EVENTS,
    ) -> None:
        self.grace_s = grace_s
        self.limit = limit
        self.attached = True
        self.queued = 0  # events waiting for the reader
        self._ended = False
        self._queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._expiry: asyncio.TimerHandle | None = None
        # A fresh context: under Ray Serve, cancelling the caller's request must not reach the run.
        self.task = asyncio.create_task(self._pump(batches, close), context=contextvars.Context())

    async def _pump(self, batches: AsyncIterator[Batch], close: Callable[[], Awaitable[None]]) -> None:
        try:
            async for batch in batches:
                while self.attached and self.queued >= self.limit:
                    self._room.clear()
                    await self._room.wait()
                if self.attached:
                    self.queued += len(batch)
                    self._queue.put_nowait(batch)
        except Exception as exc:
            self._queue.put_nowait(exc)
        finally:
            self._ended = True
            self._queue.put_nowait(None)
            if self._expiry is not None:
                self._expiry.cancel()
            await close()

    async def events(self) -> AsyncIterator[Batch]:
        """The run's batches for the attached reader; leaving (closing this iterator) detaches it."""
        try:
            while (item := await self._queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self.queued -= len(item)
                self._room.set()
                yield item
        finally:
            self.detach()

    def detach(self) -> None:
        """The reader is gone: drain the run without it, and give it ``grace_s`` to end on its own."""
        if not self.attached:
            return
        self.attached = False
        while not self._queue.empty():
            self._queue.get_nowait()
        self.queued = 0
        self._room.set()  # a pump waiting for room goes on
        if not self._ended:
            self._expiry = asyncio.get_running_loop().call_later(self.grace_s, self.task.cancel)

    async def stop(self) -> None:
        """Cancel the run now (an explicit ``cancel``, or a caller that did not ask to resume)."""
        self.detach()
        if not self._ended:
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
