"""Responses API records: what a ``resp_`` id echoes, its input items, and the chain of runs it continues.

A response is a run (``runs.run_id`` is the ``resp_`` id) of a session; this row adds
what only the Responses API needs: the echoed request fields (the skeleton the
encoder fills), the input items as the client sent them (listed by ``input_items``
and resolvable by ``item_reference``), and the parent. The output is never stored
twice: it is the run's stored events, encoded again (``relay.wire.responses`` is
deterministic), so a deleted or replayed response cannot disagree with its run.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["ResponseRows"]


class ResponseRows(abc.ABC):
    """The ``responses`` rows and the run tree; ``Store`` supplies the statements."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def create_response(
        self,
        response_id: str,
        session_id: str,
        user_id: str,
        *,
        previous_response_id: str | None,
        background: bool,
        skeleton: dict[str, Any],
        input_items: list[dict[str, Any]],
        encoding: dict[str, Any] | None = None,
    ) -> None:
        """``encoding``: how its stream was encoded (``include_encrypted``, ``server_tools``), so that a retrieval or
        a resume encodes the stored run exactly as the first stream did."""
        self._write(
            "INSERT INTO responses (response_id, session_id, user_id, previous_response_id, background, skeleton,"
            " input_items, encoding, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                response_id,
                session_id,
                user_id,
                previous_response_id,
                int(background),
                orjson.dumps(skeleton).decode(),
                orjson.dumps(input_items).decode(),
                orjson.dumps(encoding or {}).decode(),
                time.time(),
            ),
        )

    def get_response(self, response_id: str, user_id: str) -> dict[str, Any] | None:
        """The caller's response; another user's answers exactly like a missing one."""
        rows = self._rows("SELECT * FROM responses WHERE response_id = ? AND user_id = ?", (response_id, user_id))
        if not rows:
            return None
        row = rows[0]
        return row | {
            "skeleton": orjson.loads(row["skeleton"]),
            "input_items": orjson.loads(row["input_items"]),
            "encoding": orjson.loads(row["encoding"]),
            "background": bool(row["background"]),
        }

    def delete_response(self, response_id: str, user_id: str) -> bool:
        return self._write("DELETE FROM responses WHERE response_id = ? AND user_id = ?", (response_id, user_id)) > 0

    def run_chain(self, session_id: str, run_id: str) -> list[str]:
        """The runs from the session's first to ``run_id``, following parent pointers (a branch's own history)."""
        parents = {
            row["run_id"]: row["parent_run_id"]
            for row in self._rows("SELECT run_id, parent_run_id FROM runs WHERE session_id = ?", (session_id,))
        }
        chain: list[str] = []
        current: str | None = run_id
        while current is not None and current in parents and current not in chain:
            chain.append(current)
            current = parents[current]
        return chain[::-1]

    def latest_run(self, session_id: str) -> str | None:
        rows = self._rows(
            "SELECT run_id FROM runs WHERE session_id = ? ORDER BY started_at DESC LIMIT 1", (session_id,)
        )
        return rows[0]["run_id"] if rows else None

    def chain_messages(self, session_id: str, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored messages of these runs, oldest first: the context of a response that continues them."""
        if not run_ids:
            return []
        marks = ", ".join("?" for _ in run_ids)
        rows = self._rows(
            f"SELECT message FROM messages WHERE session_id = ? AND run_id IN ({marks}) ORDER BY seq",
            (session_id, *run_ids),
        )
        return [orjson.loads(row["message"]) for row in rows]
