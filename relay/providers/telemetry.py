"""What a stream tells the metrics: start, first token, tokens, errors, end; read from the batches as they pass.

``observe`` wraps a provider pool's batches, so the numbers are the ones the
caller saw (TTFT includes the pool's coalescing window). A ``MetricsSink``
records them: ``actors.metrics.PoolMetrics`` into Ray's Prometheus metrics; the
in-process backend records nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from relay.errors import RelayError
from relay.types import Batches

__all__ = ["MetricsSink", "observe"]

log = logging.getLogger("relay.providers.telemetry")


class MetricsSink(Protocol):
    def started(self, provider: str) -> None: ...

    def first_token(self, provider: str, seconds: float) -> None: ...

    def tokens(self, provider: str, input_tokens: int, output_tokens: int) -> None: ...

    def failed(self, provider: str, error_type: str) -> None: ...

    def ended(self, provider: str) -> None: ...


async def observe(
    batches: Batches,
    provider: str,
    sink: MetricsSink,
    clock: Callable[[], float] = time.perf_counter,
) -> Batches:
    started = clock()
    ttft: float | None = None
    used = [0, 0]
    error: str | None = None
    sink.started(provider)
    try:
        async for batch in batches:
            for event in batch:
                kind = event["type"]
                if ttft is None and kind != "status":
                    ttft = clock() - started
                    sink.first_token(provider, ttft)
                if kind == "usage":
                    used[0] += int(event.get("input_tokens") or 0)
                    used[1] += int(event.get("output_tokens") or 0)
                elif kind == "error":
                    error = str(event.get("error_type") or "api_error")
            yield batch
    except RelayError as exc:
        error = exc.error_type
        raise
    finally:
        if used != [0, 0]:
            sink.tokens(provider, used[0], used[1])
        if error is not None:
            sink.failed(provider, error)
        sink.ended(provider)
        log.info(
            "stream ended",
            extra={
                "provider": provider,
                "ttft_ms": round(ttft * 1000, 1) if ttft is not None else None,
                "duration_ms": round((clock() - started) * 1000, 1),
                "input_tokens": used[0],
                "output_tokens": used[1],
                "error_type": error,
            },
        )
