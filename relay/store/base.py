"""Durable sessions, messages, runs and memories: append-only rows, never a rewritten session.

A message is one row and a run is one row, so two writers to one session never
overwrite each other (agno rewrites the whole session on save and loses runs,
agno #7479). Session fields that do change (``session_data``, ``metadata``,
``name``) carry a ``version``: a writer holding a stale one gets a 409.

The queries are written once, with ``?`` placeholders; ``SQLiteStore`` and
``PostgresStore`` differ only in how they connect, run a statement and spell
a few column types (``MIGRATIONS``). Code on an event loop runs them through
``offload`` (``relay.store.offload`` says why threads), never directly.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from relay.errors import Conflict, NotFound
from relay.store.cache_rows import ResponseCacheRows
from relay.store.conversation_rows import ConversationRows
from relay.store.keys import ApiKeyRows
from relay.store.offload import Offload
from relay.store.response_rows import ResponseRows
from relay.store.schema import MIGRATIONS, Dialect, new_id
from relay.store.spend_rows import SpendRows

__all__ = ["Store", "RUN_STATUSES"]

RUN_STATUSES = ("running", "completed", "interrupted", "failed", "cancelled")
_SESSION_JSON = ("session_data", "metadata", "summary_topics")
_RUN_JSON = ("input", "tool_calls", "citations", "usage", "error", "feedback", "cost")
_EDITABLE = ("session_data", "metadata", "name")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _decode(row: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    for key in keys:
        if key in row and row[key] is not None:
            row[key] = orjson.loads(row[key])
    return row


def _without_events(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("events", None)  # replayed through run_events; too big for run listings
    return row


class Store(ResponseCacheRows, ApiKeyRows, ConversationRows, ResponseRows, SpendRows, Offload, abc.ABC):
    """The store interface every backend implements; each statement is one short transaction."""

    dialect: Dialect

    def __init__(self, threads: int = 1) -> None:
        """``threads``: how many offloaded statements may run at once (``relay.store.offload``)."""
        super().__init__(threads)
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        """Run one statement: (rows, rowcount)."""

    @abc.abstractmethod
    def _migration_done(self, version: int) -> None: ...

    @abc.abstractmethod
    def _column_exists(self, table: str, column: str) -> bool: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._execute(sql, args)[0]

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._execute(sql, args)[1]

    def migrate(self, applied: int) -> None:
        """Apply the migrations after ``applied``; ``ADD COLUMN`` steps are skipped where the column exists."""
        for version, steps in enumerate(MIGRATIONS[applied:], start=applied + 1):
            for step in steps:
                words = step.split()
                if words[:2] == ["ALTER", "TABLE"] and self._column_exists(words[2], words[5]):
                    continue
                self._execute(self.dialect.render(step))
            self._migration_done(version)

    # sessions

    def create_session(self, user_id: str, session_id: str | None = None, **fields: Any) -> dict[str, Any]:
        session_id = session_id or new_id("sess")
        self._insert_session(user_id, session_id, fields)
        session = self.get_session(session_id)
        assert session is not None
        return session

    def claim_session(self, session_id: str, user_id: str) -> bool:
        """The caller's session, created when missing: True when this call created it; another user's answers 404.

        One statement decides (``ON CONFLICT``): two first turns naming one new id, run off their loops at once,
        create it once, where a lookup then an insert would race.
        """
        if self._insert_session(user_id, session_id, {}, " ON CONFLICT (session_id) DO NOTHING"):
            return True
        self.owned_session(session_id, user_id)
        return False

    def _insert_session(self, user_id: str, session_id: str, fields: dict[str, Any], conflict: str = "") -> int:
        now = time.time()
        return self._write(
            "INSERT INTO sessions (session_id, user_id, agent_id, team_id, workflow_id, name, session_data,"
            " metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + conflict,
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

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM sessions WHERE session_id = ?", (session_id,))
        return _decode(rows[0], _SESSION_JSON) if rows else None

    def owned_session(self, session_id: str, user_id: str) -> dict[str, Any]:
        """Another user's session answers exactly like a missing one: 404."""
        session = self.get_session(session_id)
        if session is None or session["user_id"] != user_id:
            raise NotFound(f"Session '{session_id}' not found", param="session_id")
        return session

    def list_sessions(
        self, user_id: str, *, limit: int = 20, cursor: tuple[float, str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``cursor`` is the (created_at, session_id) of the last row of the previous page."""
        sql = "SELECT * FROM sessions WHERE user_id = ?"
        args: list[Any] = [user_id]
        if cursor is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND session_id < ?))"
            args += [cursor[0], cursor[0], cursor[1]]
        sql += " ORDER BY created_at DESC, session_id DESC LIMIT ?"
        args.append(limit)
        return [_decode(row, _SESSION_JSON) for row in self._rows(sql, args)]

    def update_session(self, session_id: str, user_id: str, version: int | None, **fields: Any) -> dict[str, Any]:
        """Set editable fields; with ``version``, a stale writer fails loudly instead of overwriting."""
        self.owned_session(session_id, user_id)
        changes = {key: value for key, value in fields.items() if key in _EDITABLE and value is not None}
        sets = [f"{key} = ?" for key in changes] + ["version = version + 1", "updated_at = ?"]
        args: list[Any] = [_dumps(v) if k != "name" else v for k, v in changes.items()] + [time.time(), session_id]
        sql = f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = ?"
        if version is not None:
            sql += " AND version = ?"
            args.append(version)
        if self._write(sql, args) == 0:
            current = self.owned_session(session_id, user_id)["version"]
            raise Conflict(
                f"Session '{session_id}' is at version {current}, not {version}: reload it and retry",
                param="version",
                code="version_conflict",
            )
        return self.owned_session(session_id, user_id)

    def set_summary(self, session_id: str, summary: str, topics: list[str], through_seq: int) -> None:
        self._write(
            "UPDATE sessions SET summary = ?, summary_topics = ?, summary_seq = ?, updated_at = ? WHERE session_id = ?",
            (summary, _dumps(topics), through_seq, time.time(), session_id),
        )

    def delete_session(self, session_id: str, user_id: str) -> None:
        self.owned_session(session_id, user_id)
        self._delete_sessions([session_id])

    def _delete_sessions(self, session_ids: Sequence[str]) -> None:
        for session_id in session_ids:  # explicit, so no store depends on cascading deletes being on
            for table in ("messages", "runs", "responses", "sessions"):
                self._write(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))

    def expired_sessions(self, idle_before: float, limit: int = 500) -> list[str]:
        rows = self._rows("SELECT session_id FROM sessions WHERE updated_at < ? LIMIT ?", (idle_before, limit))
        return [row["session_id"] for row in rows]

    def delete_expired(self, idle_before: float, keep: Callable[[str], bool] = lambda _: False) -> int:
        """Retention: delete sessions untouched since ``idle_before``, except those ``keep`` names (live ones)."""
        doomed = [sid for sid in self.expired_sessions(idle_before) if not keep(sid)]
        self._delete_sessions(doomed)
        return len(doomed)

    def count_sessions(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM sessions")[0]["n"])

    # messages

    def append_message(self, session_id: str, message: dict[str, Any], run_id: str | None = None) -> int:
        now = time.time()
        rows, _ = self._execute(
            "INSERT INTO messages (session_id, run_id, message, created_at) VALUES (?, ?, ?, ?) RETURNING seq",
            (session_id, run_id, _dumps(message), now),
        )
        self._write("UPDATE sessions SET updated_at = ? WHERE session_id = ?", (now, session_id))
        return int(rows[0]["seq"])

    def messages(
        self, session_id: str, limit: int | None = None, before: int | None = None, after: int | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``limit`` keeps the newest, ``before``/``after`` page by ``seq``."""
        sql = "SELECT seq, run_id, message, created_at FROM messages WHERE session_id = ?"
        args: list[Any] = [session_id]
        if before is not None:
            sql += " AND seq < ?"
            args.append(before)
        if after is not None:
            sql += " AND seq > ?"
            args.append(after)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._rows(sql, args)
        return [
            {
                **orjson.loads(row["message"]),
                "seq": row["seq"],
                "run_id": row["run_id"],
                "created_at": row["created_at"],
            }
            for row in reversed(rows)
        ]

    def count_messages(self, session_id: str) -> int:
        return int(self._rows("SELECT count(*) AS n FROM messages WHERE session_id = ?", (session_id,))[0]["n"])

    # runs

    def start_run(
        self,
        run_id: str,
        session_id: str,
        *,
        provider: str,
        model: str | None,
        input_messages: list[dict[str, Any]],
        parent_run_id: str | None = None,
        user_id: str | None = None,
        key_id: str | None = None,
    ) -> None:
        """``user_id`` and ``key_id``: who opened the run, for spend (kept even if the session goes)."""
        self._write(
            "INSERT INTO runs (run_id, session_id, status, provider, model, input, started_at, parent_run_id,"
            " user_id, key_id) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
            (run_id, session_id, provider, model, _dumps(input_messages), time.time(), parent_run_id, user_id, key_id),
        )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        output: str = "",
        reasoning: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        citations: list[dict[str, Any]] | None = None,
        usage: dict[str, int] | None = None,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
        ttft_ms: float | None = None,
        total_ms: float | None = None,
        provider: str | None = None,
        model: str | None = None,
        events: list[dict[str, Any]] | None = None,
        cost: dict[str, Any] | None = None,
    ) -> None:
        """Close a run; ``provider``/``model`` record who served it; ``events`` are kept for replay; ``cost`` is
        ``RunCost.to_dict()`` (its ``usd``, None when unpriced, is also the ``cost_usd`` column spend sums)."""
        assert status in RUN_STATUSES
        self._write(
            "UPDATE runs SET status = ?, output = ?, reasoning = ?, tool_calls = ?, citations = ?, usage = ?,"
            " finish_reason = ?, error = ?, ttft_ms = ?, total_ms = ?, finished_at = ?,"
            " provider = COALESCE(?, provider), model = COALESCE(?, model), events = ?, cost = ?, cost_usd = ?"
            " WHERE run_id = ?",
            (
                status,
                output,
                reasoning,
                _dumps(tool_calls or []),
                _dumps(citations or []),
                _dumps(usage or {}),
                finish_reason,
                _dumps(error) if error else None,
                ttft_ms,
                total_ms,
                time.time(),
                provider,
                model,
                _dumps(events) if events is not None else None,
                _dumps(cost) if cost is not None else None,
                cost.get("usd") if cost is not None else None,
                run_id,
            ),
        )

    def run_events(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """A finished run's events after ``after``, for replay."""
        rows = self._rows("SELECT events FROM runs WHERE run_id = ?", (run_id,))
        stored = orjson.loads(rows[0]["events"]) if rows and rows[0]["events"] else []
        return [event for event in stored if event["id"] > after]

    def runs(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM runs WHERE session_id = ? ORDER BY started_at", (session_id,))
        return [_decode(row, _RUN_JSON) for row in map(_without_events, rows)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return _decode(_without_events(rows[0]), _RUN_JSON) if rows else None

    def set_feedback(self, run_id: str, user_id: str, feedback: dict[str, Any]) -> None:
        """A rating and comment on a run, by the owner of its session only."""
        run = self.get_run(run_id)
        if run is None:
            raise NotFound(f"Run '{run_id}' not found", param="run_id")
        session = self.get_session(run["session_id"])
        if session is None or session["user_id"] != user_id:
            raise NotFound(f"Run '{run_id}' not found", param="run_id")
        self._write("UPDATE runs SET feedback = ? WHERE run_id = ?", (_dumps(feedback), run_id))

    def interrupt_running(self, session_id: str, output: str | None = None) -> int:
        """Runs left ``running`` by a dead actor become ``interrupted``; ``output`` is the text the caller saw."""
        return self._write(
            "UPDATE runs SET status = 'interrupted', finish_reason = 'error', finished_at = ?,"
            " output = COALESCE(?, output), error = COALESCE(error, ?) WHERE session_id = ? AND status = 'running'",
            (
                time.time(),
                output,
                _dumps({"error_type": "api_error", "message": "the session actor stopped mid-run"}),
                session_id,
            ),
        )

    # cross-session user memory

    def add_memories(self, user_id: str, facts: Sequence[str], source_session_id: str | None) -> int:
        added = 0
        for fact in facts:
            added += self._write(
                "INSERT INTO memories (memory_id, user_id, content, source_session_id, created_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, content) DO NOTHING",
                (new_id("mem"), user_id, fact, source_session_id, time.time()),
            )
        return added

    def memories(self, user_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT memory_id, content, source_session_id, created_at FROM memories WHERE user_id = ?"
            " ORDER BY created_at LIMIT ?",
            (user_id, limit),
        )

    def delete_memories(self, user_id: str, memory_id: str | None = None) -> int:
        if memory_id is None:
            return self._write("DELETE FROM memories WHERE user_id = ?", (user_id,))
        return self._write("DELETE FROM memories WHERE user_id = ? AND memory_id = ?", (user_id, memory_id))

    # runtime-registered providers

    def save_provider(self, provider_id: str, config: dict[str, Any], secret: str | None) -> None:
        self._write(
            "INSERT INTO providers (provider_id, config, secret, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (provider_id) DO UPDATE SET config = excluded.config, secret = excluded.secret",
            (provider_id, _dumps(config), secret, time.time()),
        )

    def delete_provider(self, provider_id: str) -> bool:
        return self._write("DELETE FROM providers WHERE provider_id = ?", (provider_id,)) > 0

    def providers(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT provider_id, config, secret FROM providers ORDER BY created_at")
        return [row | {"config": orjson.loads(row["config"])} for row in rows]
