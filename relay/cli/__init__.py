"""``relay``: serve, chat, status, keys, spend and eval from the terminal; one module per command.

The commands are imported when ``main`` runs, not with the package: modules
that only need ``relay.cli.output`` (the evaluation summary) must not pull in
every command, and through them their own importers.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from relay.cli.chat import run_chat
    from relay.cli.connection import add_connection_options
    from relay.cli.eval import add_eval_parser, run_eval
    from relay.cli.keys import add_keys_parser, run_keys
    from relay.cli.serve import INGRESS_CHOICES, run_serve
    from relay.cli.spend import add_spend_parser, run_spend
    from relay.cli.status import run_status
    from relay.logs import configure_cli_logging

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also print INFO lines: Serve's, Ray's, each HTTP request"
    )
    parser = argparse.ArgumentParser(prog="relay", description="Relay: a Ray-native runtime for LLM chat")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start a local Ray cluster and serve Relay", parents=[common])
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--config", default="config/serve.yaml", help="Serve config file")
    serve.add_argument("--data-dir", default=os.environ.get("RELAY_DATA_DIR", ".relay"), help="where SQLite lives")
    serve.add_argument(
        "--dashboard", action="store_true", help="also start Ray's dashboard UI on 127.0.0.1:8265 (off: ~0.2 GB less)"
    )
    serve.add_argument(
        "--ingress",
        choices=INGRESS_CHOICES,
        default="python",
        help="Serve's HTTP ingress: its Python proxy (default), or HAProxy (needs auth on a loopback bind)",
    )
    chat = commands.add_parser("chat", help="a streaming terminal chat that keeps its session", parents=[common])
    chat.add_argument("--provider", default=None)
    chat.add_argument("--session", default=None)
    status = commands.add_parser(
        "status", help="live sessions, pools and replicas (an admin key when auth is on)", parents=[common]
    )
    for command in (chat, status):
        add_connection_options(command)
    add_keys_parser(commands, [common])
    add_spend_parser(commands, [common])
    add_eval_parser(commands, [common])
    args = parser.parse_args(argv)
    configure_cli_logging(verbose=args.verbose)
    handler = {
        "serve": run_serve,
        "chat": run_chat,
        "status": run_status,
        "keys": run_keys,
        "spend": run_spend,
        "eval": run_eval,
    }
    return handler[args.command](args)
