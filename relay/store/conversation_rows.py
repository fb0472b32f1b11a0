"""The ``messages`` rows as the Conversations API reads and edits them (``relay.http.conversations_api``).

``Store.messages`` pages newest-first only (its ``limit`` keeps the newest); a
conversation lists in either order from a cursor, reads one row by ``seq`` and
deletes one row, which the append-only session path never does.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["ConversationRows"]


class ConversationRows(abc.ABC):
    """Single ``messages`` rows by ``seq``; ``Store`` supplies the statements."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def message_rows(
        self,
        session_id: str,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        limit: int,
        descending: bool = False,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` messages, ``from_seq <= seq <= to_seq``, by ``seq`` (or reversed); rows as ``messages``."""
        sql = "SELECT seq, run_id, message, created_at FROM messages WHERE session_id = ?"
        args: list[Any] = [session_id]
        if from_seq is not None:
            sql += " AND seq >= ?"
            args.append(from_seq)
        if to_seq is not None:
            sql += " AND seq <= ?"
            args.append(to_seq)
        sql += f" ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ?"
        args.append(limit)
        rows = self._rows(sql, args)
        return [{**orjson.loads(row.pop("message")), **row} for row in rows]

    def message_at(self, session_id: str, seq: int) -> dict[str, Any] | None:
        rows = self.message_rows(session_id, from_seq=seq, to_seq=seq, limit=1)
        return rows[0] if rows else None

    def delete_message(self, session_id: str, seq: int) -> bool:
        """Remove one message; the session counts as touched, so retention does not take it for idle."""
        deleted = self._write("DELETE FROM messages WHERE session_id = ? AND seq = ?", (session_id, seq)) > 0
        if deleted:
            self._write("UPDATE sessions SET updated_at = ? WHERE session_id = ?", (time.time(), session_id))
        return deleted
