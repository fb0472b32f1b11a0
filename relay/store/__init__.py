"""The store: one interface, SQLite for a laptop, PostgreSQL for a cluster, chosen by ``store_url``."""

from __future__ import annotations

from relay.store.base import RUN_STATUSES, Store
from relay.store.schema import new_id
from relay.store.sqlite import SQLiteStore

__all__ = ["Store", "SQLiteStore", "open_store", "new_id", "RUN_STATUSES"]


def open_store(url: str) -> Store:
    """``sqlite:///PATH`` or ``postgres://…`` / ``postgresql://…``."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    if url.startswith(("postgres://", "postgresql://")):
        from relay.store.postgres import PostgresStore  # psycopg loads only where a cluster store is used

        return PostgresStore(url)
    raise ValueError(f"Unsupported store URL {url!r}; use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
