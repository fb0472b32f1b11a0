"""The store contract, run against SQLite and against this machine's PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from relay.errors import Conflict, NotFound
from relay.store import SQLiteStore, Store, open_store
from relay.store.postgres import PostgresStore
from relay.store.schema import MIGRATIONS


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/relay.db"
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def store(url: str) -> Store:
    return open_store(url)


def test_sqlite_creates_its_directory_and_uses_wal(tmp_path: Path) -> None:
    open_store(f"sqlite:///{tmp_path}/data/relay.db")
    with sqlite3.connect(tmp_path / "data" / "relay.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_is_selected_by_url(pg_url: str) -> None:
    store = open_store(pg_url)
    assert type(store).__name__ == "PostgresStore" and not isinstance(store, SQLiteStore)


def test_migrations_run_once_and_upgrade_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a database as the first release left it: no version table, no new columns
        db.executescript(
            "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent_id TEXT, team_id TEXT,"
            " workflow_id TEXT, name TEXT, session_data TEXT NOT NULL DEFAULT '{}', metadata TEXT NOT NULL"
            " DEFAULT '{}', summary TEXT, version INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL);"
            "INSERT INTO sessions (session_id, user_id, created_at, updated_at) VALUES ('old', 'u', 1, 1);"
        )
    store = open_store(f"sqlite:///{path}")
    assert store.get_session("old")["summary_topics"] == []  # type: ignore[index]
    open_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT version FROM schema_version")] == list(range(1, len(MIGRATIONS) + 1))


def test_postgres_upgrades_a_schema_left_at_the_first_version(fresh_pg_url: str) -> None:
    with psycopg.connect(fresh_pg_url, autocommit=True) as db:  # version 1 recorded, with rows written under it
        for step in MIGRATIONS[0]:
            db.execute(PostgresStore.dialect.render(step))
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute("INSERT INTO sessions (session_id, user_id, created_at, updated_at) VALUES ('old', 'u', 1, 1)")
        db.execute(
            "INSERT INTO runs (run_id, session_id, status, input, started_at)"
            " VALUES ('r1', 'old', 'completed', '[]', 1)"
        )
    store = open_store(fresh_pg_url)
    assert store.get_session("old")["summary_topics"] == []  # type: ignore[index]
    run = store.get_run("r1")
    assert run is not None and run["citations"] == [] and run["feedback"] is None
    assert store.add_memories("u", ["likes tea"], "old") == 1  # a table of a later version
    store.append_message("old", {"role": "user", "content": "after the upgrade"})
    open_store(fresh_pg_url)  # a second start finds nothing to do
    with psycopg.connect(fresh_pg_url) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert [m["content"] for m in store.messages("old")] == ["after the upgrade"]


def test_messages_are_append_only_rows_in_order(store: Store) -> None:
    session = store.create_session("alice", agent_id="a1")
    sid = session["session_id"]
    assert session["user_id"] == "alice" and session["session_data"] == {} and session["version"] == 1
    seqs = [store.append_message(sid, {"role": "user", "content": f"m{i}"}, "run_1") for i in range(5)]
    assert seqs == sorted(seqs)
    assert [m["content"] for m in store.messages(sid)] == ["m0", "m1", "m2", "m3", "m4"]
    assert [m["content"] for m in store.messages(sid, limit=2)] == ["m3", "m4"]
    assert [m["content"] for m in store.messages(sid, limit=2, before=seqs[3])] == ["m1", "m2"]
    assert [m["content"] for m in store.messages(sid, after=seqs[2])] == ["m3", "m4"]


def test_two_connections_writing_one_session_lose_nothing(url: str) -> None:
    first, second = open_store(url), open_store(url)
    sid = first.create_session("bob")["session_id"]

    def write(store: Store, start: int) -> None:
        for i in range(start, 40, 2):
            store.append_message(sid, {"role": "user", "content": str(i)})

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(m["content"]) for m in first.messages(sid)) == list(range(40))


def test_versioned_updates_fail_loudly_for_a_stale_writer(store: Store) -> None:
    sid = store.create_session("dana")["session_id"]
    updated = store.update_session(sid, "dana", 1, session_data={"step": 1}, name="plan")
    assert updated["version"] == 2 and updated["session_data"] == {"step": 1} and updated["name"] == "plan"
    with pytest.raises(Conflict) as stale:
        store.update_session(sid, "dana", 1, session_data={"step": "lost"})
    assert stale.value.code == "version_conflict" and "version 2" in stale.value.message
    assert store.get_session(sid)["session_data"] == {"step": 1}  # type: ignore[index]
    assert store.update_session(sid, "dana", None, metadata={"k": "v"})["version"] == 3
    with pytest.raises(NotFound):
        store.update_session(sid, "eve", None, name="hijack")


def test_listing_is_per_user_newest_first_with_a_cursor(store: Store) -> None:
    ids = [store.create_session("frank")["session_id"] for _ in range(5)]
    store.create_session("grace")
    first = store.list_sessions("frank", limit=3)
    assert [s["session_id"] for s in first] == ids[::-1][:3]
    rest = store.list_sessions("frank", limit=3, cursor=(first[-1]["created_at"], first[-1]["session_id"]))
    assert [s["session_id"] for s in rest] == ids[::-1][3:]


def test_run_lifecycle_and_a_dead_actors_run(store: Store) -> None:
    sid = store.create_session("carol")["session_id"]
    store.start_run("run_a", sid, provider="echo", model="echo", input_messages=[{"role": "user", "content": "x"}])
    store.finish_run("run_a", status="completed", output="x", usage={"output_tokens": 1}, finish_reason="stop")
    store.start_run("run_b", sid, provider="echo", model="echo", input_messages=[])
    assert store.interrupt_running(sid, output="partial te") == 1
    runs = {run["run_id"]: run for run in store.runs(sid)}
    assert runs["run_a"]["status"] == "completed" and runs["run_a"]["usage"] == {"output_tokens": 1}
    assert runs["run_b"]["status"] == "interrupted" and runs["run_b"]["output"] == "partial te"
    assert runs["run_b"]["error"]["message"] == "the session actor stopped mid-run"
    assert store.get_run("run_a")["output"] == "x"  # type: ignore[index]
    with pytest.raises(AssertionError):
        store.finish_run("run_a", status="exploded")


def test_delete_and_retention(store: Store) -> None:
    old = store.create_session("hal")["session_id"]
    store.append_message(old, {"role": "user", "content": "x"})
    store.start_run("run_old", old, provider="echo", model=None, input_messages=[])
    live = store.create_session("hal")["session_id"]
    cutoff = time.time() + 1
    assert store.delete_expired(cutoff, keep=lambda sid: sid == live) == 1
    assert store.get_session(old) is None and store.messages(old) == [] and store.get_run("run_old") is None
    assert store.get_session(live) is not None
    store.delete_session(live, "hal")
    with pytest.raises(NotFound):
        store.delete_session(live, "hal")


def test_memories_are_per_user_and_deduplicated(store: Store) -> None:
    assert store.add_memories("ivy", ["likes tea", "lives in Oslo", "likes tea"], "s1") == 2
    store.add_memories("jon", ["likes coffee"], None)
    assert [m["content"] for m in store.memories("ivy")] == ["likes tea", "lives in Oslo"]
    first = store.memories("ivy")[0]["memory_id"]
    assert store.delete_memories("ivy", first) == 1 and store.delete_memories("ivy") == 1
    assert store.memories("ivy") == [] and len(store.memories("jon")) == 1


def test_summaries(store: Store) -> None:
    sid = store.create_session("kim")["session_id"]
    store.set_summary(sid, "They planned a trip.", ["travel"], 7)
    session = store.get_session(sid)
    assert session is not None
    assert (session["summary"], session["summary_topics"], session["summary_seq"]) == (
        "They planned a trip.",
        ["travel"],
        7,
    )


def test_rejects_unknown_store_urls() -> None:
    with pytest.raises(ValueError, match="Unsupported store URL"):
        open_store("mongodb://nope")
    with pytest.raises(psycopg.OperationalError):
        open_store("postgresql://postgres@127.0.0.1:1/test")
