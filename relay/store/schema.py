"""The store's schema: one entry per version, applied once and in order, in SQLite's and PostgreSQL's spelling."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

__all__ = ["MIGRATIONS", "Dialect", "new_id"]


class Dialect:
    """Column types that differ: ``{serial}`` an auto-increment key, ``{real}`` a float."""

    def __init__(self, serial: str, real: str) -> None:
        self.serial = serial
        self.real = real

    def render(self, sql: str) -> str:
        return sql.format(serial=self.serial, real=self.real)


# Each entry is one schema version; a store applies the ones it has not recorded, in order, once.
MIGRATIONS: list[Sequence[str]] = [
    (
        """CREATE TABLE IF NOT EXISTS sessions (
            session_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            agent_id TEXT, team_id TEXT, workflow_id TEXT, name TEXT,
            session_data TEXT NOT NULL DEFAULT '{{}}',
            metadata TEXT NOT NULL DEFAULT '{{}}',
            summary TEXT,
            version INTEGER NOT NULL DEFAULT 1,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id, created_at)",
        """CREATE TABLE IF NOT EXISTS messages (
            seq {serial},
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            run_id TEXT,
            message TEXT NOT NULL,
            created_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, seq)",
        """CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            status TEXT NOT NULL,
            provider TEXT, model TEXT,
            input TEXT NOT NULL,
            output TEXT NOT NULL DEFAULT '',
            reasoning TEXT NOT NULL DEFAULT '',
            tool_calls TEXT NOT NULL DEFAULT '[]',
            usage TEXT NOT NULL DEFAULT '{{}}',
            finish_reason TEXT,
            error TEXT,
            ttft_ms {real}, total_ms {real},
            started_at {real} NOT NULL,
            finished_at {real}
        )""",
        "CREATE INDEX IF NOT EXISTS runs_session ON runs (session_id, started_at)",
    ),
    (
        "ALTER TABLE runs ADD COLUMN citations TEXT NOT NULL DEFAULT '[]'",
        """CREATE TABLE IF NOT EXISTS providers (
            provider_id TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            secret TEXT,
            created_at {real} NOT NULL
        )""",
    ),
    (
        "ALTER TABLE sessions ADD COLUMN summary_topics TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE sessions ADD COLUMN summary_seq INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE IF NOT EXISTS memories (
            memory_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            content TEXT NOT NULL,
            source_session_id TEXT,
            created_at {real} NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS memories_user_content ON memories (user_id, content)",
        "CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated_at)",
    ),
    ("ALTER TABLE runs ADD COLUMN feedback TEXT",),
    ("ALTER TABLE runs ADD COLUMN events TEXT",),
    (
        # relay.session.cache: one row per exact request on a cached route, replayed until it expires.
        """CREATE TABLE IF NOT EXISTS response_cache (
            cache_key TEXT PRIMARY KEY,
            route TEXT NOT NULL,
            events TEXT NOT NULL,
            created_at {real} NOT NULL,
            expires_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS response_cache_route ON response_cache (route, created_at)",
    ),
    (
        # Relay API keys: only the SHA-256 of each key is kept (relay.http.auth says why that is enough).
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            name TEXT,
            is_admin INTEGER NOT NULL DEFAULT 0,
            created_at {real} NOT NULL,
            revoked_at {real}
        )""",
        "CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id)",
    ),
    (
        # Runs form a tree: a Responses run names the run it continues (previous_response_id); a chain is read by
        # following these pointers, nothing is copied. A response is a run whose id is its resp_ id.
        "ALTER TABLE runs ADD COLUMN parent_run_id TEXT",
        """CREATE TABLE IF NOT EXISTS responses (
            response_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            previous_response_id TEXT,
            background INTEGER NOT NULL DEFAULT 0,
            skeleton TEXT NOT NULL,
            input_items TEXT NOT NULL,
            encoding TEXT NOT NULL DEFAULT '{{}}',
            created_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS responses_session ON responses (session_id)",
    ),
    (
        # Spend (relay.spend): who opened each run (its user, and its API key when auth is on) and what it cost;
        # cost_usd is NULL while it runs and when a model it called has no price (cost says "unpriced": true).
        "ALTER TABLE runs ADD COLUMN user_id TEXT",
        "ALTER TABLE runs ADD COLUMN key_id TEXT",
        "ALTER TABLE runs ADD COLUMN cost_usd {real}",
        "ALTER TABLE runs ADD COLUMN cost TEXT",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at)",
        "ALTER TABLE api_keys ADD COLUMN budget_usd {real}",
        "ALTER TABLE api_keys ADD COLUMN budget_period TEXT",
    ),
]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
