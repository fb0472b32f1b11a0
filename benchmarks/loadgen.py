"""Streaming load generator for OpenAI Chat Completions: C clients, R streams each, every stream checked.

    .venv/bin/python -m benchmarks.loadgen URL --model bench --concurrency 32 --rounds 3 --tokens 100

It parses the SSE lines itself over httpx (no SDK objects per chunk, so the client stays cheap)
and gives every stream its own tag as the user message. The fake upstream answers a tag with a
known text (``benchmarks.fake_upstream.reply_text``), so a stream counts as ok only when its text
is exactly that, it finished with ``stop`` and ended with ``[DONE]`` (and, with ``include_usage``,
carried a usage chunk with the right completion tokens). Anything else is an error: a status
other than 200, a broken stream, or a wrong text (counted apart as ``inexact``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from benchmarks.fake_upstream import reply_text

__all__ = ["LoadReport", "percentile", "run_load", "main"]

MAX_ERROR_SAMPLES = 5


@dataclass
class LoadReport:
    """One load run against one target; times in ms, throughput in delivered content chars per second."""

    concurrency: int
    streams: int
    ok: int
    errors: int
    inexact: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    stream_p50_ms: float | None
    stream_p99_ms: float | None
    chars: int
    chars_per_s: float
    wall_s: float
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank, so p99 of fewer than 100 samples is the worst one seen."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class _Stream:
    """What one stream delivered, parsed line by line."""

    __slots__ = ("done", "finish", "text", "ttft", "usage_tokens")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.ttft: float | None = None
        self.finish: str | None = None
        self.usage_tokens: int | None = None
        self.done = False

    def feed_responses(self, data: str, started: float) -> None:
        """A Responses API event (``/v1/responses``): text deltas, then one terminal event."""
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "response.output_text.delta":
            if self.ttft is None:
                self.ttft = time.perf_counter() - started
            self.text.append(event["delta"])
        elif kind == "response.completed":
            self.finish, self.done = "stop", True
            self.usage_tokens = (event["response"].get("usage") or {}).get("output_tokens")
        elif kind in ("response.failed", "response.incomplete", "error"):
            raise RuntimeError(f"{kind}: {data[:200]}")

    def feed(self, data: str, started: float) -> None:
        chunk = orjson.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"error chunk: {data[:200]}")
        if chunk.get("usage"):
            self.usage_tokens = chunk["usage"].get("completion_tokens")
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - started
                self.text.append(content)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]


async def _one_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], wire: str = "chat"
) -> tuple[_Stream, float]:
    started = time.perf_counter()
    stream = _Stream()
    feed = stream.feed_responses if wire == "responses" else stream.feed
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread())[:200].decode(errors="replace")
            raise RuntimeError(f"HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, ": comments", "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                stream.done = True
                break
            feed(data, started)
            if stream.done:
                break
    return stream, time.perf_counter() - started


async def run_load(
    url: str,
    *,
    model: str,
    concurrency: int,
    rounds: int,
    expected: Callable[[str], str],
    tokens: int | None = None,
    headers: dict[str, str] | None = None,
    include_usage: bool = False,
    timeout_s: float = 300.0,
    wire: str = "chat",
) -> LoadReport:
    """``concurrency`` clients each run ``rounds`` streams back to back; ``expected(tag)`` is a stream's exact text.

    ``tokens`` is the completion tokens a usage chunk must report when ``include_usage`` is set.
    """
    nonce = secrets.token_hex(3)  # new tags every run: no gateway can answer from a cache of the last one
    ttfts: list[float] = []
    durations: list[float] = []
    chars = errors = inexact = 0
    samples: list[str] = []

    def failed(reason: str) -> None:
        nonlocal errors
        errors += 1
        if len(samples) < MAX_ERROR_SAMPLES:
            samples.append(reason)

    async def client_loop(client: httpx.AsyncClient, index: int) -> None:
        nonlocal chars, inexact
        for round_ in range(rounds):
            tag = f"{nonce}c{index}r{round_}"
            body: dict[str, Any] = {"model": model, "stream": True, "messages": [{"role": "user", "content": tag}]}
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            if wire == "responses":  # the same request on the Responses wire: usage always comes at the end
                body = {"model": model, "stream": True, "input": tag}
            try:
                stream, duration = await _one_stream(client, url, body, wire)
            except (httpx.HTTPError, RuntimeError, orjson.JSONDecodeError) as exc:
                failed(f"{type(exc).__name__}: {exc}"[:300])
                continue
            text = "".join(stream.text)
            if not stream.done or stream.finish != "stop" or stream.ttft is None:
                failed(f"stream {tag} ended early: done={stream.done} finish={stream.finish} chars={len(text)}")
            elif text != expected(tag) or (include_usage and stream.usage_tokens != tokens):
                inexact += 1
                failed(f"stream {tag}: {len(text)} chars, usage {stream.usage_tokens}, not the upstream's text")
            else:
                ttfts.append(stream.ttft)
                durations.append(duration)
                chars += len(text)

    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers or {}) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, index) for index in range(concurrency)))
        wall = time.perf_counter() - started
    return LoadReport(
        concurrency=concurrency,
        streams=concurrency * rounds,
        ok=len(ttfts),
        errors=errors,
        inexact=inexact,
        ttft_p50_ms=_ms(percentile(ttfts, 0.5)),
        ttft_p99_ms=_ms(percentile(ttfts, 0.99)),
        stream_p50_ms=_ms(percentile(durations, 0.5)),
        stream_p99_ms=_ms(percentile(durations, 0.99)),
        chars=chars,
        chars_per_s=round(chars / wall, 1) if wall > 0 else 0.0,
        wall_s=round(wall, 3),
        error_samples=samples,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="the chat completions URL, e.g. http://127.0.0.1:9100/v1/chat/completions")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="streams per client, back to back")
    parser.add_argument("--tokens", type=int, default=100, help="the fake upstream's --tokens")
    parser.add_argument("--header", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument("--include-usage", action="store_true")
    args = parser.parse_args(argv)
    report = asyncio.run(
        run_load(
            args.url,
            model=args.model,
            concurrency=args.concurrency,
            rounds=args.rounds,
            expected=lambda tag: reply_text(tag, args.tokens),
            tokens=args.tokens,
            headers=dict(h.split("=", 1) for h in args.header),
            include_usage=args.include_usage,
        )
    )
    print(orjson.dumps(report.as_dict()).decode())


if __name__ == "__main__":
    main()
