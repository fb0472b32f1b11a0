"""``relay status``: live sessions, the lifecycle settings and what they did, and the provider pools."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
from rich.table import Column

from relay.cli.connection import auth_headers
from relay.cli.output import console_for, new_table

__all__ = ["run_status"]


def run_status(args: argparse.Namespace) -> int:
    try:
        stats = httpx.get(f"{args.url}/api/stats", headers=auth_headers(args), timeout=10).raise_for_status().json()
    except httpx.HTTPError as exc:
        print(f"relay status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    console = console_for(sys.stdout)
    for line in _session_lines(stats["sessions"]):
        console.print(line, markup=False)
    console.print()
    pools = new_table(
        "provider", "type", "pool", Column("replicas", justify="right"), "status", terminal=console.is_terminal
    )
    for pool in stats["providers"]:
        # A pool Ray has not placed yet says which resources it waits for (Serve's message).
        status = pool.get("status", "") + (f": waiting, {pool['waiting']}" if pool.get("waiting") else "")
        pools.add_row(pool["provider_id"], pool["provider_type"], pool.get("pool", ""), str(pool["replicas"]), status)
    console.print(pools)
    return 0


def _session_lines(sessions: dict[str, Any]) -> list[str]:
    """Live, passivated and pooled counts first; then the lifecycle settings and what they have done so far."""
    live, pooled = sessions["live"], sessions["pooled"]
    passivated = sessions.get("passivated", sessions.get("stored", live) - live)
    lines = [
        f"sessions: {live} live on {sessions.get('live_actors', live)} actors (cap {sessions.get('max_actors', '-')}), "
        f"{passivated} passivated, {pooled} pooled actors"
    ]
    if "idle_ttl_s" in sessions:
        retention = sessions.get("retention_days")
        lines.append(
            f"lifecycle: live cap {sessions['max_live_sessions']}, warm pool {sessions['warm_pool_size']}, "
            f"idle TTL {sessions['idle_ttl_s']:g} s, retention {f'{retention:g} days' if retention else 'forever'}"
        )
        lines.append(
            f"since start: {sessions['activations']} activations ({sessions['reactivations']} from the store), "
            f"{sessions['passivations']} passivations ({sessions['lru_passivations']} over the live cap), "
            f"{sessions['expired']} expired"
        )
    return lines
