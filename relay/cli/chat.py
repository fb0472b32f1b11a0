"""``relay chat``: a streaming terminal chat that keeps its session from one message to the next."""

from __future__ import annotations

import argparse
import sys

import httpx
import orjson

from relay.cli.connection import auth_headers

__all__ = ["run_chat"]


def run_chat(args: argparse.Namespace) -> int:
    session_id = args.session
    print("relay chat: type a message, Ctrl-D to quit.", file=sys.stderr)
    with httpx.Client(base_url=args.url, timeout=None, headers=auth_headers(args)) as client:
        while True:
            try:
                text = input("you> ")
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if not text.strip():
                continue
            body = {
                "messages": [{"role": "user", "content": text}],
                "provider_id": args.provider,
                "stream_format": "ndjson",
                "session_id": session_id,
            }
            with client.stream("POST", "/api/streaming/chat", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    print(f"error {response.status_code}: {response.json()['error']['message']}", file=sys.stderr)
                    continue
                session_id = response.headers.get("x-session-id", session_id)
                sys.stdout.write("assistant> ")
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = orjson.loads(line)
                    if event["type"] == "text-delta":
                        sys.stdout.write(event["content"])
                        sys.stdout.flush()
                    elif event["type"] == "error":
                        sys.stdout.write(f"\n[error: {event['message']}]")
                sys.stdout.write("\n")
            print(f"(session {session_id})", file=sys.stderr)
