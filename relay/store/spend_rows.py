"""Spend in the store: what runs cost, summed for a budget's period or listed for a spend report."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["SpendRows", "SPEND_COLUMNS"]

# The budget kinds and the runs column each one is counted by.
SPEND_COLUMNS = {"key": "key_id", "user": "user_id", "provider": "provider"}


class SpendRows(abc.ABC):
    """Reads over ``runs.cost_usd``; ``Store`` supplies the statements. A run counts from when it started."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _write(self, sql: str, args: Sequence[Any] = ()) -> int: ...

    def spent(self, kind: str, subject: str, since: float) -> float:
        """USD the runs of a key, user or provider cost since ``since`` (unpriced runs add nothing: unknown)."""
        column = SPEND_COLUMNS[kind]
        rows = self._rows(
            f"SELECT SUM(cost_usd) AS usd FROM runs WHERE {column} = ? AND started_at >= ?", (subject, since)
        )
        return float(rows[0]["usd"] or 0.0)

    def run_costs(self, since: float, until: float, user_id: str | None = None) -> list[dict[str, Any]]:
        """Every costed run that started in [since, until), optionally one user's; ``cost`` decoded."""
        sql = (
            "SELECT run_id, started_at, user_id, key_id, provider, model, cost_usd, cost FROM runs"
            " WHERE cost IS NOT NULL AND started_at >= ? AND started_at < ?"
        )
        args: list[Any] = [since, until]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        rows = self._rows(sql + " ORDER BY started_at", args)
        return [row | {"cost": orjson.loads(row["cost"])} for row in rows]

    def add_run_cost(self, run_id: str, cost: dict[str, Any]) -> None:
        """Add a side call's cost (a memory extraction after the run ended) to its run's: tokens summed, and the
        total unpriced if either is. Only the run's own session writes it, so read-then-write is safe."""
        rows = self._rows("SELECT cost FROM runs WHERE run_id = ?", (run_id,))
        if not rows or rows[0]["cost"] is None:
            return
        total = orjson.loads(rows[0]["cost"])
        tokens = total.setdefault("tokens", {})
        for kind, count in cost.get("tokens", {}).items():
            tokens[kind] = tokens.get(kind, 0) + count
        total["unpriced"] = bool(total.get("unpriced") or cost.get("unpriced"))
        total["usd"] = None if total["unpriced"] else (total.get("usd") or 0.0) + (cost.get("usd") or 0.0)
        self._write(
            "UPDATE runs SET cost = ?, cost_usd = ? WHERE run_id = ?",
            (orjson.dumps(total).decode(), total["usd"], run_id),
        )
