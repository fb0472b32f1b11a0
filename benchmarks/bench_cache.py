"""Response cache: how much faster a hit is than a miss, through the HTTP app.

One echo pool stands in for the upstream: it answers after ``--ttft-ms`` and
streams ``--words`` words at ``--tokens-per-s``. A cached route sits over it.
Each round sends a new prompt (a miss: the upstream streams it, and the reply
is stored) and then the same prompt again (a hit: replayed from the store in
one batch), both as typed SSE read to the end by an httpx client. The script
prints the median wall time of each and their ratio; ``--ttft-ms 0
--tokens-per-s 0`` measures Relay's own overhead on each path.

    .venv/bin/python benchmarks/bench_cache.py
    .venv/bin/python benchmarks/bench_cache.py --store-url postgresql://postgres@127.0.0.1:5432/test

A PostgreSQL run works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import uvicorn

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend


@contextlib.contextmanager
def _store(url: str | None) -> Iterator[str]:
    if url is None:
        yield f"sqlite:///{tempfile.mkdtemp()}/relay.db"
        return
    schema = f"relay_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def _serve(app: object) -> tuple[uvicorn.Server, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))  # type: ignore[arg-type]
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


async def _timed(http: httpx.AsyncClient, prompt: str) -> tuple[float, str]:
    started = time.perf_counter()
    body = {"model": "cached", "messages": [{"role": "user", "content": prompt}]}
    async with http.stream("POST", "/api/streaming/chat", json=body) as response:
        async for _ in response.aiter_bytes():
            pass
    return time.perf_counter() - started, response.headers.get("x-relay-cache", "")


async def _run(url: str, rounds: int, words: int) -> dict[str, float]:
    misses, hits = [], []
    filler = " ".join(f"w{i}" for i in range(words - 1))
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await _timed(http, "warm-up " + filler)
        for i in range(rounds):
            prompt = f"{i} {filler}"
            miss, state = await _timed(http, prompt)
            assert state == "miss", state
            hit, state = await _timed(http, prompt)
            assert state == "hit", state
            misses.append(miss)
            hits.append(hit)
    miss_ms, hit_ms = statistics.median(misses) * 1000, statistics.median(hits) * 1000
    return {"miss_p50_ms": round(miss_ms, 2), "hit_p50_ms": round(hit_ms, 2), "ratio": round(miss_ms / hit_ms, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=60.0)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--store-url", default=None, help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    upstream = ProviderConfig(
        provider_id="upstream",
        provider_type="echo",
        model="echo",
        options={"ttft_ms": args.ttft_ms, "tokens_per_s": args.tokens_per_s},
    )
    route = {"name": "cached", "pools": [{"provider": "upstream"}], "cache": {"ttl_s": 3600}}
    with _store(args.store_url) as store_url:
        settings = RelaySettings(store_url=store_url, providers=[upstream], routes=[route])
        server, url = _serve(build_app(LocalBackend(settings)))
        try:
            figures = asyncio.run(_run(url, args.rounds, args.words))
        finally:
            server.should_exit = True
    figures |= {"rounds": args.rounds, "ttft_ms": args.ttft_ms, "tokens_per_s": args.tokens_per_s, "words": args.words}
    print(json.dumps(figures))
    print(
        f"miss p50 {figures['miss_p50_ms']} ms, hit p50 {figures['hit_p50_ms']} ms: "
        f"a hit is {figures['ratio']}x faster ({store_url.split(':', 1)[0]} store)"
    )


if __name__ == "__main__":
    main()
