"""Per-token cost of the stream encoders: OpenAIChunkEncoder against ResponsesEncoder, in one run.

Each encoder turns ``--tokens`` text tokens into bytes, in three shapes, and the
script prints the best of ``--repeat`` runs as microseconds per token (process
CPU time, so other load on the machine matters little):

- ``1``: one token per batch, as a lone stream sends them;
- ``8 events``: batches of 8 separate text-delta events. The chunk encoder joins
  them into one chunk; the Responses encoder sends one frame per event, because
  its sequence numbers must not depend on batching (a resume counts frames);
- ``8 merged``: 8 tokens in one text-delta event per batch: what the pool's
  coalescing (``relay.providers.coalesce.merge_deltas``) makes of a busy stream
  before the run log numbers its events; one frame in both encoders.

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


def measure(
    make: Callable[[], Callable[[list[dict[str, Any]]], bytes]], tokens: int, batch: int, repeat: int, merged: bool
) -> float:
    """Best-of-``repeat`` microseconds per token, finish included, over a fresh encoder each run."""
    if merged:
        batches = [[{"type": "text-delta", "content": " tok" * batch}] for _ in range(tokens // batch)]
    else:
        batches = [[{"type": "text-delta", "content": " tok"} for _ in range(batch)] for _ in range(tokens // batch)]
    batches[-1].append({"type": "finish", "reason": "stop"})
    best = float("inf")
    for _ in range(repeat):
        encode = make()
        started = time.process_time()
        for events in batches:
            encode(events)
        best = min(best, time.process_time() - started)
    return best / tokens * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.tokens} text tokens, best of {args.repeat}; us per token")
    print(f"{'batch':>9} | {'OpenAIChunkEncoder':>18} | {'ResponsesEncoder':>16} | ratio")
    for label, batch, merged in (("1", 1, False), ("8 events", 8, False), ("8 merged", 8, True)):
        chat = measure(_openai, args.tokens, batch, args.repeat, merged)
        responses = measure(_responses, args.tokens, batch, args.repeat, merged)
        print(f"{label:>9} | {chat:>18.3f} | {responses:>16.3f} | {responses / chat:.2f}")


if __name__ == "__main__":
    main()
