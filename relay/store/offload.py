"""The store's async face: an event loop awaits a statement that runs on the store's own small thread pool.

Every statement is written once, synchronously, in ``Store`` and its row mixins;
``offload`` runs any of them on a bounded ``ThreadPoolExecutor`` the store owns,
so the loop only ever waits on a future, never on the database. The sync API
stays for the CLI, the tests and code that is not on a loop.

Why threads and not psycopg's ``AsyncConnectionPool``: an async pool needs an
async copy of every statement path (``_execute``, the row mixins' helpers, the
migration), so the SQL would be written twice and SQLite would still need a
thread. With threads, the two things the async pool would buy still hold: the
loop never waits on I/O, and connections are bounded, because ``PostgresStore``
draws from a ``psycopg_pool.ConnectionPool`` of at most ``pool_max`` connections
and its executor has exactly ``pool_max`` threads (a statement never waits for a
connection another offloaded statement holds). SQLite keeps its one connection
and its lock, and one thread: more would only queue on that lock, and one keeps
offloaded statements in the order they were submitted.

A cancelled caller behaves as it did around the sync call this replaces: its
statement, once submitted, runs to its end (``asyncio.shield``: a write must
not be dropped from the queue half way through a turn's bookkeeping), and the
caller sees the cancellation only once the statement is done, so whatever it
writes next (a cancelled run's final row) lands after it, on any thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["Offload"]

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """The executor half of ``Store``: ``await store.offload(store.append_message, ...)`` from any event loop."""

    def __init__(self, threads: int) -> None:
        # Threads start on first use: a store only ever used synchronously (the CLI) never starts one.
        self._offload = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="relay-store")

    async def offload(self, statement: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``statement(*args, **kwargs)`` on the store's threads, with the caller's context (its request id)."""
        call = functools.partial(contextvars.copy_context().run, statement, *args, **kwargs)
        done = asyncio.get_running_loop().run_in_executor(self._offload, call)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait({done})
            raise

    def _stop_offload(self) -> None:
        """Let submitted statements finish, then stop the threads: ``close`` shuts the connection after this."""
        self._offload.shutdown(wait=True)
