"""``relay spend``: what runs cost, grouped by user, key, provider, model or day, read from a running server.

A table on a terminal, plain columns into a pipe. A non-admin key sees its own
user's spend only (``GET /api/spend`` decides, not this command).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
from rich.table import Column

from relay.cli.connection import add_connection_options, auth_headers
from relay.cli.output import console_for, new_table
from relay.spend.report import GROUPS

__all__ = ["add_spend_parser", "run_spend", "spend_table"]


def add_spend_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    spend = commands.add_parser("spend", help="what runs cost, grouped (an admin key sees every user)", parents=common)
    spend.add_argument("--from", dest="since", default=None, help="Unix seconds or an ISO date (UTC); default: all")
    spend.add_argument("--to", dest="until", default=None, help="Unix seconds or an ISO date (UTC), exclusive")
    spend.add_argument("--group-by", choices=GROUPS, default="user")
    spend.add_argument("--user", default=None, help="one user's spend (admin)")
    add_connection_options(spend)


def run_spend(args: argparse.Namespace) -> int:
    query = {"from": args.since, "to": args.until, "group_by": args.group_by, "user_id": args.user}
    try:
        response = httpx.get(
            f"{args.url}/api/spend",
            params={name: value for name, value in query.items() if value},
            headers=auth_headers(args),
            timeout=30,
        )
    except httpx.HTTPError as exc:
        print(f"relay spend: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if response.is_error:
        message = response.json().get("error", {}).get("message", response.text) if response.content else ""
        print(f"relay spend: {response.status_code} {message}", file=sys.stderr)
        return 1
    console = console_for(sys.stdout)
    console.print(spend_table(response.json(), terminal=console.is_terminal))
    return 0


def spend_table(report: dict[str, Any], *, terminal: bool) -> Any:
    """One row per group and a total; an unpriced run is counted, never priced at zero."""
    group_by = report["group_by"]
    numbers = ("cost_usd", "runs", "unpriced", "input", "cached", "output", "reasoning")
    columns = [Column(name, justify="right") for name in numbers]
    table = new_table(group_by, *columns, terminal=terminal)
    for entry in [*report["data"], {group_by: "total"} | report["total"]]:
        tokens = entry["tokens"]
        table.add_row(
            str(entry[group_by]),
            f"{entry['cost_usd']:.6f}",
            str(entry["runs"]),
            str(entry["unpriced_runs"]),
            *(str(tokens.get(kind, 0)) for kind in ("input", "cached_input", "output", "reasoning")),
        )
    return table
