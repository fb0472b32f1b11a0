"""Relay API keys in the store: only each key's SHA-256 is kept (``relay.http.auth`` says why that is enough)."""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any

from relay.store.schema import new_id

__all__ = ["ApiKeyRows"]


class ApiKeyRows(abc.ABC):
    """The ``api_keys`` rows; ``Store`` supplies the statements."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def create_api_key(
        self,
        user_id: str,
        key_hash: str,
        prefix: str,
        *,
        is_admin: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        budget_period: str = "month",
    ) -> dict[str, Any]:
        key_id = new_id("key")
        self._write(
            "INSERT INTO api_keys (key_id, user_id, key_hash, prefix, name, is_admin, created_at, budget_usd,"
            " budget_period) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, user_id, key_hash, prefix, name, int(is_admin), time.time(), budget_usd, budget_period),
        )
        return self.api_keys(key_id=key_id, include_revoked=True)[0]

    def api_key_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        """The live key with this hash; a revoked one is as good as unknown."""
        rows = self._rows(
            "SELECT key_id, user_id, is_admin, budget_usd, budget_period FROM api_keys"
            " WHERE key_hash = ? AND revoked_at IS NULL",
            (key_hash,),
        )
        return rows[0] | {"is_admin": bool(rows[0]["is_admin"])} if rows else None

    def api_keys(
        self, user_id: str | None = None, *, key_id: str | None = None, include_revoked: bool = False
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT key_id, user_id, prefix, name, is_admin, created_at, revoked_at, budget_usd, budget_period"
            " FROM api_keys WHERE 1 = 1"
        )
        args: list[Any] = []
        for column, value in (("user_id", user_id), ("key_id", key_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        rows = self._rows(sql + " ORDER BY created_at, key_id", args)
        return [row | {"is_admin": bool(row["is_admin"])} for row in rows]

    def set_api_key_budget(self, key_id: str, budget_usd: float | None, budget_period: str) -> bool:
        """A key's budget (None lifts it); False when no live key has this id."""
        return (
            self._write(
                "UPDATE api_keys SET budget_usd = ?, budget_period = ? WHERE key_id = ? AND revoked_at IS NULL",
                (budget_usd, budget_period, key_id),
            )
            > 0
        )

    def revoke_api_keys(self, *, key_id: str | None = None, user_id: str | None = None) -> int:
        """Revoke one key, or every key of a user; the rows stay, so auth stays on once it was."""
        if (key_id is None) == (user_id is None):
            raise ValueError("name exactly one of key_id and user_id")
        column, value = ("key_id", key_id) if key_id is not None else ("user_id", user_id)
        return self._write(
            f"UPDATE api_keys SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL", (time.time(), value)
        )

    def has_api_keys(self) -> bool:
        """Whether a key was ever created: from then on the server requires one."""
        return bool(self._rows("SELECT 1 AS one FROM api_keys LIMIT 1"))
