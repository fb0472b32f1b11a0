"""The cluster store: PostgreSQL through psycopg 3, shared by every node.

Each process holds one autocommit connection; statements are short, and the
schema is migrated under an advisory lock so concurrent starters do not race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay.store.base import Store
from relay.store.schema import Dialect

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x52454C4159  # "RELAY"


class PostgresStore(Store):
    dialect = Dialect(serial="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION")

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._db = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._db.execute("SELECT max(version) AS v FROM schema_version").fetchone()
            self.migrate((row or {}).get("v") or 0)

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            cursor = self._db.execute(sql.replace("?", "%s"), tuple(args))  # type: ignore[arg-type]
            rows = cursor.fetchall() if cursor.description is not None else []
            return rows, cursor.rowcount

    def _migration_done(self, version: int) -> None:
        self._db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def _column_exists(self, table: str, column: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()
