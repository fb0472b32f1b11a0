"""The running server that ``relay chat`` and ``relay status`` talk to: its URL and the caller's API key."""

from __future__ import annotations

import argparse
import os

__all__ = ["DEFAULT_URL", "add_connection_options", "auth_headers"]

DEFAULT_URL = "http://127.0.0.1:8000"


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the Relay server (default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=os.environ.get("RELAY_API_KEY"), help="default: $RELAY_API_KEY")


def auth_headers(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
