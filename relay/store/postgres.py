"""The cluster store: PostgreSQL through psycopg 3, shared by every node.

Each store draws its connections from one ``psycopg_pool.ConnectionPool`` of 1 to
``pool_max`` autocommit connections, so a process never holds more than that
however many loops and threads call it (the budget for a cluster is in
``benchmarks/README.md``, "The store off the event loop"). Statements are short
and session-free: nothing but the migration's transaction-scoped advisory lock
(``pg_advisory_xact_lock``) outlives a statement, so the store runs unchanged
behind pgbouncer in transaction mode. The schema is migrated under that lock so
concurrent starters do not race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from relay.store.base import Store
from relay.store.schema import Dialect

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x52454C4159  # "RELAY"


def _run(db: Connection[DictRow], sql: str, args: Sequence[Any]) -> tuple[list[dict[str, Any]], int]:
    cursor = db.execute(sql.replace("?", "%s"), tuple(args))  # type: ignore[arg-type]
    rows = cursor.fetchall() if cursor.description is not None else []
    return rows, cursor.rowcount


class PostgresStore(Store):
    dialect = Dialect(serial="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION")

    def __init__(self, url: str, *, pool_max: int = 4, application_name: str = "relay") -> None:
        """``pool_max``: this store's connections at most, and its offload threads (one connection each);
        ``application_name``: how its connections show in ``pg_stat_activity``."""
        super().__init__(threads=pool_max)
        self.url = url
        self._pool: ConnectionPool[Connection[DictRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_max,
            kwargs={"autocommit": True, "row_factory": dict_row, "application_name": application_name},
            name=application_name,
            open=False,
        )
        self._pool.open(wait=True)
        # The migration's statements share one connection: the transaction that holds the advisory lock.
        self._migrating: Connection[DictRow] | None = None
        with self._pool.connection() as db, db.transaction():
            self._migrating = db
            try:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = db.execute("SELECT max(version) AS v FROM schema_version").fetchone()
                self.migrate((row or {}).get("v") or 0)
            finally:
                self._migrating = None

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        if self._migrating is not None:
            return _run(self._migrating, sql, args)
        with self._pool.connection() as db:
            return _run(db, sql, args)

    def _migration_done(self, version: int) -> None:
        self._execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def _column_exists(self, table: str, column: str) -> bool:
        return bool(
            self._rows(
                "SELECT 1 AS one FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = ? AND column_name = ?",
                (table, column),
            )
        )

    def close(self) -> None:
        self._stop_offload()
        self._pool.close()
