"""Spend reports: stored run costs summed by user, key, provider, model or UTC day.

Sums are made here, not in SQL, so that SQLite and PostgreSQL agree on what a
day is (UTC) and on an unpriced run: it counts in ``runs`` and
``unpriced_runs``, never as zero dollars in ``cost_usd``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from relay.errors import InvalidRequest
from relay.spend.prices import TOKEN_KINDS

__all__ = ["GROUPS", "parse_when", "spend_report"]

GROUPS = ("user", "key", "provider", "model", "day")
_COLUMN = {"user": "user_id", "key": "key_id", "provider": "provider", "model": "model"}


def parse_when(value: str | None, param: str, default: float) -> float:
    """A bound of a report: Unix seconds, an ISO date (midnight UTC) or an ISO date-time (UTC unless it says)."""
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"'{param}' must be Unix seconds or an ISO date such as 2026-12-01, not {value!r}", param=param
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _group_of(row: dict[str, Any], group_by: str) -> str:
    if group_by == "day":
        return datetime.fromtimestamp(row["started_at"], UTC).date().isoformat()
    return row[_COLUMN[group_by]] or "-"


def spend_report(rows: Iterable[dict[str, Any]], group_by: str) -> dict[str, Any]:
    """``{"data": [{group_by: value, cost_usd, runs, unpriced_runs, tokens}], "total": {...}}``, costliest first."""
    if group_by not in GROUPS:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUPS)}, not {group_by!r}", param="group_by")
    groups: dict[str, dict[str, Any]] = {}
    total = _empty()
    for row in rows:
        for bucket in (groups.setdefault(_group_of(row, group_by), _empty()), total):
            bucket["runs"] += 1
            if row["cost_usd"] is None:
                bucket["unpriced_runs"] += 1
            else:
                bucket["cost_usd"] += row["cost_usd"]
            for kind, count in (row["cost"].get("tokens") or {}).items():
                bucket["tokens"][kind] = bucket["tokens"].get(kind, 0) + count
    data = [{group_by: name} | values for name, values in groups.items()]
    data.sort(key=lambda entry: (-entry["cost_usd"], entry[group_by]))
    return {"data": data, "total": total}


def _empty() -> dict[str, Any]:
    return {"cost_usd": 0.0, "runs": 0, "unpriced_runs": 0, "tokens": dict.fromkeys(TOKEN_KINDS, 0)}

