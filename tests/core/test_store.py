from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.store import SQLiteStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return open_store(f"sqlite:///{tmp_path}/data/relay.db")


def test_creates_its_directory_and_uses_wal(store: SQLiteStore, tmp_path: Path) -> None:
    assert (tmp_path / "data" / "relay.db").exists()
    with sqlite3.connect(tmp_path / "data" / "relay.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_messages_are_append_only_rows_in_order(store: SQLiteStore) -> None:
    session = store.create_session("alice", agent_id="a1")
    sid = session["session_id"]
    assert session["user_id"] == "alice" and session["session_data"] == {}
    seqs = [store.append_message(sid, {"role": "user", "content": f"m{i}"}, "run_1") for i in range(5)]
    assert seqs == sorted(seqs)
    assert [m["content"] for m in store.messages(sid)] == ["m0", "m1", "m2", "m3", "m4"]
    assert [m["content"] for m in store.messages(sid, limit=2)] == ["m3", "m4"]
    assert [m["content"] for m in store.messages(sid, limit=2, before=seqs[3])] == ["m1", "m2"]


def test_two_connections_write_the_same_session_without_losing_rows(tmp_path: Path) -> None:
    first = open_store(f"sqlite:///{tmp_path}/r.db")
    second = open_store(f"sqlite:///{tmp_path}/r.db")
    sid = first.create_session("bob")["session_id"]
    for i in range(10):
        (first if i % 2 else second).append_message(sid, {"role": "user", "content": str(i)})
    assert [m["content"] for m in first.messages(sid)] == [str(i) for i in range(10)]


def test_run_lifecycle_and_recovery_of_a_dead_actors_run(store: SQLiteStore) -> None:
    sid = store.create_session("carol")["session_id"]
    store.start_run("run_a", sid, provider="echo", model="echo", input_messages=[{"role": "user", "content": "x"}])
    store.finish_run(
        "run_a",
        status="completed",
        output="x",
        usage={"output_tokens": 1},
        finish_reason="stop",
        ttft_ms=1.0,
        total_ms=2.0,
    )
    store.start_run("run_b", sid, provider="echo", model="echo", input_messages=[])
    assert store.interrupt_running(sid) == 1
    runs = {run["run_id"]: run for run in store.runs(sid)}
    assert runs["run_a"]["status"] == "completed" and runs["run_a"]["usage"] == {"output_tokens": 1}
    assert runs["run_b"]["status"] == "interrupted"
    assert store.get_run("run_a")["output"] == "x"
    with pytest.raises(AssertionError):
        store.finish_run("run_a", status="exploded")


def test_rejects_unknown_store_urls() -> None:
    with pytest.raises(ValueError, match="Unsupported store URL"):
        open_store("mongodb://nope")
