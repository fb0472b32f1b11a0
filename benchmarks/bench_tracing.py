"""CPU per token of OpenTelemetry tracing, on against off, in one run.

The app runs in-process (``build_app(LocalBackend)`` over ``httpx.ASGITransport``)
in front of ``echo`` at full speed; every request streams ``--tokens`` tokens
through the ingress, the session and the provider runtime, so with tracing on it
makes the three spans of a real request. An OTLP/HTTP receiver runs in a process
of its own (its decoding is not Relay's cost; the exporter's encoding and POST
are, and are counted: each measurement ends with a flush). ``time.process_time``
over ``--runs`` requests, best of ``--rounds``, on and off interleaved; printed
as microseconds of CPU per token.

    .venv/bin/python -m benchmarks.bench_tracing
    .venv/bin/python -m benchmarks.bench_tracing --tokens 20,200,2000 --runs 30 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from starlette.applications import Starlette

from relay import tracing
from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.providers.echo import echo_tokens
from relay.session.local_backend import LocalBackend

__all__ = ["measure", "main"]

ROOT = Path(__file__).resolve().parents[1]
WORDS = 20  # the prompt; --tokens is reached by echo's ``repeat``


@contextlib.contextmanager
def receiver() -> Iterator[str]:
    """An OTLP/HTTP receiver (tests.fakes.otlp_receiver) in a child process; its URL once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-m", "tests.fakes.otlp_receiver", "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the OTLP receiver did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(timeout=10)


def _app(store_dir: str, on: bool, endpoint: str) -> Starlette:
    """The app, built after tracing was switched: ``build_app`` adds the ingress middleware only when it is on."""
    if on:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    else:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    assert tracing.configure() == on
    settings = RelaySettings(
        store_url=f"sqlite:///{store_dir}/bench-{'on' if on else 'off'}.db",
        providers=[ProviderConfig(provider_id="echo", provider_type="echo")],
    )
    return build_app(LocalBackend(settings))


async def _request(client: httpx.AsyncClient, repeat: int) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(WORDS))}],
        "stream": True,
        "provider_options": {"repeat": repeat},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            pass


async def measure(app: Starlette, repeat: int, runs: int) -> float:
    """CPU seconds for ``runs`` requests, the spans' export included (a flush ends the clock)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
        await _request(client, repeat)  # warm: imports, the store, this process's tracer provider
        started = time.process_time()
        for _ in range(runs):
            await _request(client, repeat)
        tracing.shutdown()
        return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="20,200,2000", help="tokens per request, comma-separated")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(n) for n in args.tokens.split(",")]
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")
    with receiver() as endpoint, tempfile.TemporaryDirectory() as store_dir:
        print(f"{args.runs} requests per measurement, best of {args.rounds}; CPU (process_time) per token")
        header = ("tokens/req", "off us/token", "on us/token", "overhead", "per request")
        print(" | ".join(f"{name:>{width}}" for name, width in zip(header, (10, 12, 11, 8, 11), strict=True)))
        for size in sizes:
            repeat = max(1, size // WORDS)
            tokens = len(echo_tokens(" ".join(f"w{i}" for i in range(WORDS)), repeat)) * args.runs
            best = {False: float("inf"), True: float("inf")}
            for _ in range(args.rounds):
                for on in (False, True):
                    best[on] = min(best[on], asyncio.run(measure(_app(store_dir, on, endpoint), repeat, args.runs)))
            off, on_ = best[False] / tokens * 1e6, best[True] / tokens * 1e6
            per_request_ms = (best[True] - best[False]) / args.runs * 1e3
            print(
                f"{tokens // args.runs:>10} | {off:>12.2f} | {on_:>11.2f} | {(on_ - off) / off:>+8.1%} | "
                f"{per_request_ms:>8.3f} ms"
            )
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    tracing.configure()


if __name__ == "__main__":
    main()
