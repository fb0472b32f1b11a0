"""The store off the event loop: a slow statement leaves the loop running, and PostgreSQL connections stay bounded.

Slowness here is real, never a sleep: a statement held on a ``threading.Event``, or a write that waits in
PostgreSQL for a table lock another connection holds. What the tests watch is read from the database itself
(``pg_stat_activity``, each store's connections named by ``application_name``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from relay.events import text_delta
from relay.request import ChatRequest
from relay.session.session import Session
from relay.store import Store, open_store
from relay.store.postgres import PostgresStore
from relay.types import Batch
from tests.conftest import PG_BASE
from tests.waiting import await_until, wait_until


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/relay.db" if request.param == "sqlite" else request.getfixturevalue("fresh_pg_url")
    store = open_store(url)
    yield store
    store.close()


def _backends(application_name: str, waiting_on_a_lock: bool = False) -> int:
    """This store's connections as PostgreSQL sees them (those blocked on a lock only, if asked)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    if waiting_on_a_lock:
        sql += " AND wait_event_type = 'Lock'"
    with psycopg.connect(PG_BASE, autocommit=True) as db:
        row = db.execute(sql, (application_name,)).fetchone()
    assert row is not None
    return int(row[0])


@contextmanager
def locked(url: str, table: str = "memories") -> Iterator[None]:
    """Another client holds ``table``: every statement on it waits in PostgreSQL until the block ends."""
    with psycopg.connect(url) as db, db.transaction():
        db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield


async def test_a_statement_held_off_the_loop_leaves_the_loop_running(store: Store) -> None:
    store.create_session("ada", "s1")
    entered, release = threading.Event(), threading.Event()

    def slow_append() -> int:
        entered.set()
        assert release.wait(30), "the test never released the statement"
        return store.append_message("s1", {"role": "user", "content": "late"})

    write = asyncio.create_task(store.offload(slow_append))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    # Both wait on the loop: neither could advance if the held statement were running on it.
    await await_until(entered.is_set, timeout_s=10, what="the statement to start on a store thread")
    await await_until(lambda: ticks >= 100, timeout_s=10, what="a coroutine to keep running")
    assert not write.done()
    release.set()
    assert await write >= 1
    ticker.cancel()
    assert [m["content"] for m in store.messages("s1")] == ["late"]


async def test_a_cancelled_caller_resumes_once_its_statement_is_done(store: Store) -> None:
    """As around the sync call it replaces: what the caller writes next can never overtake it."""
    store.create_session("ada", "s1")
    entered, release = threading.Event(), threading.Event()

    def slow_append() -> int:
        entered.set()
        assert release.wait(30), "the test never released the statement"
        return store.append_message("s1", {"role": "user", "content": "kept"})

    write = asyncio.create_task(store.offload(slow_append))
    await await_until(entered.is_set, timeout_s=10, what="the statement to start on a store thread")
    write.cancel()
    await await_until(lambda: write.cancelling() == 1, timeout_s=10, what="the cancellation to be delivered")
    assert not write.done()  # cancelled, still waiting for its statement
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert [m["content"] for m in store.messages("s1")] == ["kept"]


async def test_a_turn_cancelled_while_its_first_writes_wait_is_stored_cancelled(fresh_pg_url: str) -> None:
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(fresh_pg_url, pool_max=2, application_name=name)
    store.create_session("ada", "s1")
    session = Session(store, "s1", "ada")
    called: list[ChatRequest] = []

    async def upstream(request: ChatRequest) -> AsyncIterator[Batch]:
        called.append(request)
        yield [text_delta("never")]

    async def turn() -> None:
        request = ChatRequest(provider="fake", messages=[{"role": "user", "content": "hi"}], run_id="run_1")
        async for _ in session.chat(request, upstream):
            pass

    try:
        with locked(fresh_pg_url, "runs"):
            running = asyncio.create_task(turn())
            await await_until(
                lambda: asyncio.to_thread(_backends, name, True),
                timeout_s=10,
                what="the run's row to wait on the lock",
                done=lambda waiting: waiting == 1,
            )
            running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        run = store.get_run("run_1")
        assert run is not None and run["status"] == "cancelled" and not called
        assert [m["content"] for m in store.messages("s1")] == ["hi"]
    finally:
        store.close()


async def test_a_write_blocked_in_postgres_stalls_neither_the_loop_nor_the_other_connections(
    fresh_pg_url: str,
) -> None:
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(fresh_pg_url, pool_max=2, application_name=name)
    try:
        with locked(fresh_pg_url):
            write = asyncio.create_task(store.offload(store.add_memories, "ada", ["likes tea"], None))
            await await_until(
                lambda: asyncio.to_thread(_backends, name, True),
                timeout_s=10,
                what="the write to wait on the table lock",
                done=lambda waiting: waiting == 1,
            )
            # The loop runs and the pool's second connection answers while the first waits in the database.
            assert await store.offload(store.count_sessions) == 0
            assert not write.done()
        assert await write == 1
        assert [m["content"] for m in store.memories("ada")] == ["likes tea"]
    finally:
        store.close()


async def test_the_pool_never_opens_more_than_its_max_connections(fresh_pg_url: str) -> None:
    name = f"relay-test-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(fresh_pg_url, pool_max=3, application_name=name)
    try:
        with locked(fresh_pg_url):
            # Six offloaded writes and four from plain threads (the sync API): ten callers for three connections.
            writes = [store.offload(store.add_memories, "ada", [f"fact {i}"], None) for i in range(6)]
            pending = asyncio.gather(*writes)
            threads = [threading.Thread(target=store.add_memories, args=("bob", [f"fact {i}"], None)) for i in range(4)]
            for thread in threads:
                thread.start()
            await await_until(
                lambda: asyncio.to_thread(_backends, name, True),
                timeout_s=10,
                what="three writes to wait on the lock",
                done=lambda waiting: waiting == 3,
            )
            assert await asyncio.to_thread(_backends, name) == 3  # every connection busy, and no fourth opened
        assert await pending == [1] * 6
        for thread in threads:
            thread.join()
        assert len(store.memories("ada")) == 6 and len(store.memories("bob")) == 4
        assert wait_until(lambda: _backends(name), timeout_s=5, what="the pool's connections", done=lambda n: n <= 3)
    finally:
        store.close()
    assert wait_until(lambda: _backends(name), timeout_s=10, what="close to end them", done=lambda n: n == 0) == 0
