"""``relay keys create|list|update|revoke``: API keys and their budgets, written straight to the store the server uses.

The store is the one ``relay serve`` would open (the config's ``store_url``, a
relative SQLite path under ``--data-dir``), or ``--store-url``. A running
server sees a new key at once, and a revoked key or a changed budget within
``auth.cache_ttl_s``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from relay.cli.output import console_for, new_table
from relay.cli.serve import load_serve_config
from relay.http.auth import new_key
from relay.spend import PERIODS
from relay.store import Store, open_store

__all__ = ["add_keys_parser", "run_keys"]


def add_keys_parser(commands: Any, common: list[argparse.ArgumentParser]) -> None:
    """``common``: the options every command takes (``--verbose``), on each action."""
    keys = commands.add_parser("keys", help="create, list and revoke per-user API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="a new key for a user; printed once, stored hashed", parents=common)
    create.add_argument("--user", required=True, help="the user the key acts as")
    create.add_argument("--admin", action="store_true", help="may also register providers and read stats")
    create.add_argument("--name", default=None, help="a label, e.g. the service that holds the key")
    update = actions.add_parser("update", help="set or lift a key's budget", parents=common)
    update.add_argument("key_id", help="a key id from `relay keys list`")
    for action in (create, update):
        action.add_argument(
            "--budget-usd", type=_budget, default=None, help="USD the key may spend per period ('none' lifts it)"
        )
        action.add_argument("--budget-period", choices=PERIODS, default="month", help="when it resets (UTC)")
    listing = actions.add_parser("list", help="keys (never the keys themselves: their prefixes)", parents=common)
    listing.add_argument("--user", default=None)
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = actions.add_parser("revoke", help="revoke one key by id, or every key of a user", parents=common)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("key_id", nargs="?", help="a key id from `relay keys list`")
    target.add_argument("--user", default=None)
    for action in (create, listing, update, revoke):
        action.add_argument("--config", default="config/serve.yaml", help="the Serve config naming the store")
        action.add_argument("--data-dir", default=os.environ.get("RELAY_DATA_DIR", ".relay"))
        action.add_argument("--store-url", default=None, help="overrides the config's store_url")


def _store(args: argparse.Namespace) -> Store:
    if args.store_url:
        return open_store(args.store_url)
    # the same resolution as `relay serve`
    config = load_serve_config(Path(args.config), host=None, port=None, data_dir=Path(args.data_dir))
    return open_store(config["applications"][0]["args"]["store_url"])


def run_keys(args: argparse.Namespace) -> int:
    if not args.store_url and not Path(args.config).is_file():
        print(f"relay keys: config file {args.config} not found (or pass --store-url)", file=sys.stderr)
        return 2
    store = _store(args)
    try:
        if args.keys_command == "create":
            key, digest, prefix = new_key()
            row = store.create_api_key(
                args.user,
                digest,
                prefix,
                is_admin=args.admin,
                name=args.name,
                budget_usd=args.budget_usd,
                budget_period=args.budget_period,
            )
            print(key)
            role = "admin" if args.admin else "user"
            note = f"{row['key_id']}: {role} key for '{args.user}'. Relay keeps only its hash: copy it now."
            print(note, file=sys.stderr)
            return 0
        if args.keys_command == "list":
            console = console_for(sys.stdout)
            columns = ("key_id", "user", "prefix", "admin", "budget", "created", "revoked")
            table = new_table(*columns, terminal=console.is_terminal)
            for row in store.api_keys(args.user, include_revoked=args.all):
                revoked = _when(row["revoked_at"]) if row["revoked_at"] else "-"
                admin = "yes" if row["is_admin"] else "no"
                budget = _budget_text(row["budget_usd"], row["budget_period"])
                created = _when(row["created_at"])
                table.add_row(row["key_id"], row["user_id"], row["prefix"], admin, budget, created, revoked)
            console.print(table)
            return 0
        if args.keys_command == "update":
            if not store.set_api_key_budget(args.key_id, args.budget_usd, args.budget_period):
                print(f"relay keys: no live key {args.key_id}", file=sys.stderr)
                return 1
            print(f"{args.key_id}: budget {_budget_text(args.budget_usd, args.budget_period)}", file=sys.stderr)
            return 0
        count = store.revoke_api_keys(key_id=args.key_id, user_id=args.user if args.key_id is None else None)
        print(f"revoked {count} key(s)", file=sys.stderr)
        return 0 if count else 1
    finally:
        store.close()


def _budget(value: str) -> float | None:
    """``--budget-usd``: a positive amount, or ``none``."""
    if value.lower() == "none":
        return None
    try:
        amount = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}") from None
    if not 0 < amount < float("inf"):
        raise argparse.ArgumentTypeError(f"a budget must be a positive amount, not {value}")
    return amount


def _budget_text(usd: float | None, period: str | None) -> str:
    if usd is None:
        return "-"
    return f"${usd:.2f} " + ("in total" if period == "none" else f"per {period or 'month'}")


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))
