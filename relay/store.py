"""Durable sessions, messages and runs: append-only rows, never a rewritten session.

SQLite in WAL mode is the embedded default: one file that every actor process
on the node writes with short transactions. A message is one row and a run is
one row, so two writers to one session never overwrite each other.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from .errors import NotFound

__all__ = ["SQLiteStore", "open_store", "new_id", "RUN_STATUSES"]

RUN_STATUSES = ("running", "completed", "interrupted", "failed", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    agent_id TEXT, team_id TEXT, workflow_id TEXT, name TEXT,
    session_data TEXT NOT NULL DEFAULT '{}',
    metadata TEXT NOT NULL DEFAULT '{}',
    summary TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id, created_at);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    run_id TEXT,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, seq);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    provider TEXT, model TEXT,
    input TEXT NOT NULL,
    output TEXT NOT NULL DEFAULT '',
    reasoning TEXT NOT NULL DEFAULT '',
    tool_calls TEXT NOT NULL DEFAULT '[]',
    usage TEXT NOT NULL DEFAULT '{}',
    finish_reason TEXT,
    error TEXT,
    ttft_ms REAL, total_ms REAL,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS runs_session ON runs (session_id, started_at);
"""

_SESSION_JSON = ("session_data", "metadata", "summary")
_RUN_JSON = ("input", "tool_calls", "usage", "error")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    # sessions

    def create_session(self, user_id: str, session_id: str | None = None, **fields: Any) -> dict[str, Any]:
        now = time.time()
        session_id = session_id or new_id("sess")
        self._write(
            "INSERT INTO sessions (session_id, user_id, agent_id, team_id, workflow_id, name, session_data,"
            " metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                user_id,
                fields.get("agent_id"),
                fields.get("team_id"),
                fields.get("workflow_id"),
                fields.get("name"),
                _dumps(fields.get("session_data") or {}),
                _dumps(fields.get("metadata") or {}),
                now,
                now,
            ),
        )
        session = self.get_session(session_id)
        assert session is not None
        return session

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
        if not rows:
            return None
        session = rows[0]
        for key in _SESSION_JSON:
            session[key] = orjson.loads(session[key]) if session[key] is not None else None
        return session

    def owned_session(self, session_id: str, user_id: str) -> dict[str, Any]:
        """Another user's session answers exactly like a missing one: 404."""
        session = self.get_session(session_id)
        if session is None or session["user_id"] != user_id:
            raise NotFound(f"Session '{session_id}' not found", param="session_id")
        return session

    def count_sessions(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM sessions", ())[0]["n"])

    # messages

    def append_message(self, session_id: str, message: dict[str, Any], run_id: str | None = None) -> int:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO messages (session_id, run_id, message, created_at) VALUES (?, ?, ?, ?)",
                (session_id, run_id, _dumps(message), now),
            )
            self._db.execute("UPDATE sessions SET updated_at = ? WHERE session_id = ?", (now, session_id))
        return int(cursor.lastrowid or 0)

    def messages(self, session_id: str, limit: int | None = None, before: int | None = None) -> list[dict[str, Any]]:
        """Oldest first; ``limit`` keeps the newest, ``before`` pages back by ``seq``."""
        sql = "SELECT seq, run_id, message, created_at FROM messages WHERE session_id = ?"
        args: list[Any] = [session_id]
        if before is not None:
            sql += " AND seq < ?"
            args.append(before)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._rows(sql, tuple(args))
        return [
            {
                **orjson.loads(row["message"]),
                "seq": row["seq"],
                "run_id": row["run_id"],
                "created_at": row["created_at"],
            }
            for row in reversed(rows)
        ]

    # runs

    def start_run(
        self, run_id: str, session_id: str, *, provider: str, model: str | None, input_messages: list[dict[str, Any]]
    ) -> None:
        self._write(
            "INSERT INTO runs (run_id, session_id, status, provider, model, input, started_at)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (run_id, session_id, provider, model, _dumps(input_messages), time.time()),
        )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: str = "",
        reasoning: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
        ttft_ms: float | None = None,
        total_ms: float | None = None,
    ) -> None:
        assert status in RUN_STATUSES
        self._write(
            "UPDATE runs SET status = ?, output = ?, reasoning = ?, tool_calls = ?, usage = ?, finish_reason = ?,"
            " error = ?, ttft_ms = ?, total_ms = ?, finished_at = ? WHERE run_id = ?",
            (
                status,
                output,
                reasoning,
                _dumps(tool_calls or []),
                _dumps(usage or {}),
                finish_reason,
                _dumps(error) if error else None,
                ttft_ms,
                total_ms,
                time.time(),
                run_id,
            ),
        )

    def runs(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM runs WHERE session_id = ? ORDER BY started_at", (session_id,))
        for row in rows:
            for key in _RUN_JSON:
                row[key] = orjson.loads(row[key]) if row[key] is not None else None
        return rows

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT session_id FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        return next(run for run in self.runs(rows[0]["session_id"]) if run["run_id"] == run_id)

    def interrupt_running(self, session_id: str) -> int:
        """Runs left ``running`` by a dead actor become ``interrupted`` on reactivation."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE runs SET status = 'interrupted', finish_reason = 'cancelled', finished_at = ?"
                " WHERE session_id = ? AND status = 'running'",
                (time.time(), session_id),
            )
        return cursor.rowcount


def open_store(url: str) -> SQLiteStore:
    prefix = "sqlite:///"
    if url.startswith(prefix):
        return SQLiteStore(url[len(prefix) :])
    raise ValueError(f"Unsupported store URL {url!r}; use sqlite:///PATH")
