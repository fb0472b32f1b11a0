"""What a stream tells the metrics: start, first token, tokens, errors, end.

``ProviderRuntime`` reads these off the upstream's events in the same single pass that
keeps its routing counters (one walk per token, not two). A ``MetricsSink``
records them: ``actors.metrics.PoolMetrics`` into Ray's Prometheus metrics; the
in-process backend records nothing (``NO_METRICS``).
"""

from __future__ import annotations

import logging
from typing import Protocol

__all__ = ["MetricsSink", "NO_METRICS", "log_stream"]

log = logging.getLogger("relay.providers.telemetry")


class MetricsSink(Protocol):
    def started(self, provider: str) -> None: ...

    def first_token(self, provider: str, seconds: float) -> None: ...

    def tokens(self, provider: str, input_tokens: int, output_tokens: int) -> None: ...

    def failed(self, provider: str, error_type: str) -> None: ...

    def ended(self, provider: str) -> None: ...


class _NoMetrics:
    def started(self, provider: str) -> None:
        pass

    def first_token(self, provider: str, seconds: float) -> None:
        pass

    def tokens(self, provider: str, input_tokens: int, output_tokens: int) -> None:
        pass

    def failed(self, provider: str, error_type: str) -> None:
        pass

    def ended(self, provider: str) -> None:
        pass


NO_METRICS: MetricsSink = _NoMetrics()


def log_stream(
    provider: str, ttft_s: float | None, duration_s: float, used: tuple[int, int], error: str | None
) -> None:
    """One line per stream, never one per token: what an operator greps for a slow or failing provider."""
    log.info(
        "stream ended",
        extra={
            "provider": provider,
            "ttft_ms": round(ttft_s * 1000, 1) if ttft_s is not None else None,
            "duration_ms": round(duration_s * 1000, 1),
            "input_tokens": used[0],
            "output_tokens": used[1],
            "error_type": error,
        },
    )
