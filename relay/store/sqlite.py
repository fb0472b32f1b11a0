"""The embedded default: one SQLite file in WAL mode, written by every actor process on the node."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.store.base import Store
from relay.store.schema import Dialect

__all__ = ["SQLiteStore"]


class SQLiteStore(Store):
    dialect = Dialect(serial="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL")
    _migrating = False

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
            try:
                self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
                self._migrating = True
                self.migrate(row[0] or 0)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._migrating = False

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> tuple[list[dict[str, Any]], int]:
        if self._migrating:  # already under the lock, inside the migration transaction
            cursor = self._db.execute(sql, tuple(args))
            return [dict(row) for row in cursor.fetchall()], cursor.rowcount
        with self._lock:
            cursor = self._db.execute(sql, tuple(args))
            return [dict(row) for row in cursor.fetchall()], cursor.rowcount

    def _migration_done(self, version: int) -> None:
        self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def _column_exists(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self._db.execute(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        self._stop_offload()
        self._db.close()
