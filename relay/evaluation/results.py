"""Durable cell results: one row per cell, written the moment the cell finishes.

The table is keyed ``(row_id, provider, model, repeat, config_hash)``, so a
rerun of the same evaluation finds every finished cell and calls none of them
again. SQLite (one file in the output folder) by default; PostgreSQL for a
results table shared across machines. The schema has its own version table
and migrations, apart from the chat store's.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from relay.evaluation.plan import CellKey

__all__ = ["ResultStore", "open_results", "CELL_COLUMNS"]

CELL_COLUMNS = (
    "row_id",
    "provider",
    "model",
    "repeat",
    "config_hash",
    "label",
    "status",
    "prompt",
    "expected",
    "output",
    "finish_reason",
    "ttft_ms",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost",
    "error",
    "scores",
    "scorer_hash",
    "passed",
    "judge_cost",
    "updated_at",
)
_JSON = ("expected", "error", "scores")
_KEY = CELL_COLUMNS[:5]
_MIGRATION_LOCK = 0x52455641  # "REVA"

# Each entry is one schema version, applied once in order; ``{real}`` is the dialect's float type.
MIGRATIONS: list[Sequence[str]] = [
    (
        """CREATE TABLE IF NOT EXISTS eval_cells (
            row_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            config_hash TEXT NOT NULL,
            label TEXT NOT NULL,
            status TEXT NOT NULL,
            prompt TEXT NOT NULL DEFAULT '',
            expected TEXT,
            output TEXT NOT NULL DEFAULT '',
            finish_reason TEXT,
            ttft_ms {real},
            latency_ms {real},
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost {real},
            error TEXT,
            scores TEXT NOT NULL DEFAULT '[]',
            scorer_hash TEXT,
            passed INTEGER,
            judge_cost {real} NOT NULL DEFAULT 0,
            updated_at {real} NOT NULL,
            PRIMARY KEY (row_id, provider, model, repeat, config_hash)
        )""",
    ),
]


class ResultStore:
    """The cell table over one DB-API connection; ``?`` placeholders, rewritten for psycopg."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self.postgres = url.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            import psycopg  # loaded only where a shared results table is used

            self._db: Any = psycopg.connect(url, autocommit=True)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                self._migrate("DOUBLE PRECISION")
        elif url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._migrate("REAL")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        else:
            raise ValueError(f"Unsupported results URL {url!r}; use sqlite:///PATH or postgresql://USER@HOST/DB")

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _migrate(self, real: str) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS eval_schema_version (version INTEGER NOT NULL)")
        row = self._db.execute("SELECT max(version) FROM eval_schema_version").fetchone()
        for version in range((row[0] if row else None) or 0, len(MIGRATIONS)):
            for statement in MIGRATIONS[version]:
                self._db.execute(statement.format(real=real))
            self._db.execute(self._sql("INSERT INTO eval_schema_version (version) VALUES (?)"), (version + 1,))

    def put(self, record: dict[str, Any]) -> None:
        """Insert or replace one cell's result (a retried cell overwrites its error)."""
        values = []
        for column in CELL_COLUMNS:
            value = record.get(column)
            if column in _JSON:
                value = orjson.dumps(value).decode() if value is not None else ("[]" if column == "scores" else None)
            elif column == "passed" and value is not None:
                value = int(bool(value))
            elif column == "updated_at":
                value = time.time()
            values.append(value)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CELL_COLUMNS[5:])
        sql = (
            f"INSERT INTO eval_cells ({', '.join(CELL_COLUMNS)}) VALUES ({', '.join('?' * len(CELL_COLUMNS))}) "
            f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"
        )
        with self._lock:
            self._db.execute(self._sql(sql), values)

    def records(self, keys: Iterable[CellKey] | None = None) -> dict[CellKey, dict[str, Any]]:
        """Stored cells by key; only those in ``keys`` when given."""
        wanted = set(keys) if keys is not None else None
        with self._lock:
            cursor = self._db.execute(f"SELECT {', '.join(CELL_COLUMNS)} FROM eval_cells")
            rows = cursor.fetchall()
        out = {}
        for row in rows:
            record = dict(zip(CELL_COLUMNS, row, strict=True))
            key = (record["row_id"], record["provider"], record["model"], int(record["repeat"]), record["config_hash"])
            if wanted is not None and key not in wanted:
                continue
            for column in _JSON:
                if record[column] is not None:
                    record[column] = orjson.loads(record[column])
            if record["passed"] is not None:
                record["passed"] = bool(record["passed"])
            record["repeat"] = int(record["repeat"])
            out[key] = record
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_results(url: str | None, out_dir: str | Path) -> ResultStore:
    """``url``, or ``cells.db`` in the output folder."""
    return ResultStore(url or f"sqlite:///{Path(out_dir).resolve() / 'cells.db'}")
