"""The store: one interface, SQLite for a laptop, PostgreSQL for a cluster, chosen by ``store_url``."""

from __future__ import annotations

import os

from relay.store.base import RUN_STATUSES, Store
from relay.store.schema import new_id
from relay.store.sqlite import SQLiteStore

__all__ = ["Store", "SQLiteStore", "open_store", "new_id", "RUN_STATUSES"]


def open_store(url: str) -> Store:
    """``sqlite:///PATH`` or ``postgres://…`` / ``postgresql://…``; a PostgreSQL store holds at most
    ``RELAY_PG_POOL_MAX`` connections (default 4) per process, the cluster's budget."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    if url.startswith(("postgres://", "postgresql://")):
        from relay.store.postgres import PostgresStore  # psycopg loads only where a cluster store is used

        return PostgresStore(url, pool_max=int(os.environ.get("RELAY_PG_POOL_MAX", "4")))
    raise ValueError(f"Unsupported store URL {url!r}; use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
