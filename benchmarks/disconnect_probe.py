"""How often a dropped client's run is cancelled, through a running Relay: silent streams against flowing ones.

    .venv/bin/relay serve --ingress haproxy --port 8312 --data-dir /tmp/h &   # with a key: relay keys create
    .venv/bin/python -m benchmarks.disconnect_probe --url http://127.0.0.1:8312 --key rk_... [--drops 10] [--format sse]

Each drop opens an NDJSON stream (``--format sse``: an SSE one, which gets keep-alive lines while silent,
``stream_keepalive_s``) on the echo provider, reads its first text delta, and closes the
connection. "silent" streams hang after two tokens (echo's ``fault: hang``: no bytes while the client
leaves, as when a model thinks or a tool runs), "flowing" ones keep sending 4 tokens a second. A run still
``running`` ``--wait-s`` after the drop was missed. Behaviour, not speed; it is here because the numbers
decide an ingress (README, "Lever 1: the HAProxy ingress").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson

__all__ = ["main"]

BODIES: dict[str, dict[str, Any]] = {
    "silent": {"content": "a b c d e f", "provider_options": {"fault": "hang", "fault_after": 2}},
    "flowing": {"content": " ".join(["w"] * 200), "provider_options": {"tokens_per_s": 4}},
}


async def drop_once(http: httpx.AsyncClient, kind: str, wait_s: float, stream_format: str) -> float | None:
    """Seconds until the dropped run was stored as cancelled; None if it was still running after ``wait_s``."""
    body = BODIES[kind]
    chat = {
        "messages": [{"role": "user", "content": body["content"]}],
        "provider_options": body["provider_options"],
        "stream_format": stream_format,
    }
    prefix = "data: " if stream_format == "sse" else ""
    async with http.stream("POST", "/api/streaming/chat", json=chat) as response:
        session_id = response.headers["x-session-id"]
        async for line in response.aiter_lines():
            data = line[len(prefix) :] if line.startswith(prefix) else ""
            if data.startswith("{") and orjson.loads(data)["type"] == "text-delta":
                break
    dropped = time.monotonic()
    while time.monotonic() - dropped < wait_s:
        runs = (await http.get(f"/api/sessions/{session_id}/runs")).json()["runs"]
        if runs and runs[0]["status"] != "running":
            return time.monotonic() - dropped
        await asyncio.sleep(0.2)
    return None


async def probe(url: str, key: str | None, drops: int, wait_s: float, stream_format: str) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        for kind in BODIES:
            seen = [await drop_once(http, kind, wait_s, stream_format) for _ in range(drops)]
            caught = sorted(s for s in seen if s is not None)
            slowest = f"{caught[-1]:.1f} s" if caught else "-"
            print(f"{kind}: {len(caught)} of {drops} cancelled (slowest {slowest}), {drops - len(caught)} missed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=None, help="a key when auth is on")
    parser.add_argument("--drops", type=int, default=10, help="drops of each kind")
    parser.add_argument("--wait-s", type=float, default=30.0, help="how long a dropped run may take to stop")
    parser.add_argument("--format", choices=("ndjson", "sse"), default="ndjson", help="the stream's format")
    args = parser.parse_args(argv)
    asyncio.run(probe(args.url, args.key, args.drops, args.wait_s, args.format))


if __name__ == "__main__":
    main()
