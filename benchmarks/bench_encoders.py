"""Per-token cost of the stream encoders: OpenAIChunkEncoder against ResponsesEncoder, in one run.

Each encoder turns ``--tokens`` text-delta events, in batches of 1 and of 8 (a
coalescing window's worth), into bytes; the script prints the best of
``--repeat`` runs as microseconds per token. A batch of several text-deltas
becomes one frame in both encoders, so batching divides the per-token cost.

    .venv/bin/python benchmarks/bench_encoders.py
    .venv/bin/python benchmarks/bench_encoders.py --tokens 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from relay.http.encoders import OpenAIChunkEncoder
from relay.wire.responses import ResponsesEncoder, response_skeleton

__all__ = ["measure", "main"]


def _openai() -> Callable[[list[dict[str, Any]]], bytes]:
    encoder = OpenAIChunkEncoder("bench-model", include_usage=True)
    encoder.start()
    return encoder.encode


def _responses() -> Callable[[list[dict[str, Any]]], bytes]:
    skeleton = response_skeleton(response_id="resp_bench0001", created_at=0, model="bench-model")
    encoder = ResponsesEncoder(skeleton)
    encoder.start()
    return encoder.encode


def measure(make: Callable[[], Callable[[list[dict[str, Any]]], bytes]], tokens: int, batch: int, repeat: int) -> float:
    """Best-of-``repeat`` microseconds per token, finish included, over a fresh encoder each run."""
    batches = [[{"type": "text-delta", "content": " tok"} for _ in range(batch)] for _ in range(tokens // batch)]
    batches[-1].append({"type": "finish", "reason": "stop"})
    best = float("inf")
    for _ in range(repeat):
        encode = make()
        started = time.perf_counter()
        for events in batches:
            encode(events)
        best = min(best, time.perf_counter() - started)
    return best / tokens * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.tokens} text tokens, best of {args.repeat}; us per token")
    print(f"{'batch':>5} | {'OpenAIChunkEncoder':>18} | {'ResponsesEncoder':>16} | ratio")
    for batch in (1, 8):
        chat = measure(_openai, args.tokens, batch, args.repeat)
        responses = measure(_responses, args.tokens, batch, args.repeat)
        print(f"{batch:>5} | {chat:>18.3f} | {responses:>16.3f} | {responses / chat:.2f}")


if __name__ == "__main__":
    main()
