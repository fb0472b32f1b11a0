"""What a provider pool replica runs around its adapter: feature checks, retries, the breaker, coalescing.

Plain Python, so the Ray pool (``actors.provider_pool``) and the in-process
backend run the same code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from relay import tracing
from relay.config import ProviderConfig
from relay.errors import RelayError
from relay.providers import adapter_class
from relay.providers.base import BaseProviderAdapter
from relay.providers.coalesce import LoadGauge, coalesce
from relay.providers.features import check_features
from relay.providers.resilience import CircuitBreaker, RetryPolicy, retrying
from relay.providers.structured import output_schema, validated
from relay.providers.telemetry import NO_METRICS, MetricsSink, log_stream
from relay.request import ChatRequest
from relay.types import Batches

__all__ = ["ProviderRuntime", "TTFT_EWMA_ALPHA"]

# Weight of the newest sample in the moving TTFT average that latency routing reads (~the last 10 requests).
TTFT_EWMA_ALPHA = 0.2


class ProviderRuntime:
    def __init__(
        self,
        config: ProviderConfig,
        gauge: LoadGauge,
        *,
        http_client: httpx2.AsyncClient | None = None,
        metrics: MetricsSink = NO_METRICS,
    ) -> None:
        self.config = config
        self.gauge = gauge
        self.metrics = metrics
        self.policy = RetryPolicy(config.max_retries, config.retry_base_s, config.retry_max_s)
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_reset_s)
        self.counters = {"requests": 0, "completed": 0, "errors": 0, "ttft_ms_total": 0.0, "duration_ms_total": 0.0}
        # Streams this runtime carries now, and the moving TTFT average: what routes balance on (relay.session.balancer)
        self.in_flight = 0
        self.ttft_ewma_ms: float | None = None
        # A provider whose adapter cannot be built still deploys; its requests get the reason as a clear error.
        self.adapter: BaseProviderAdapter | None = None
        self.unavailable: RelayError | None = None
        try:
            self.adapter = adapter_class(config)(config, http_client=http_client)
        except RelayError as exc:
            self.unavailable = exc

    def _adapter(self) -> BaseProviderAdapter:
        if self.adapter is None:
            assert self.unavailable is not None
            raise self.unavailable
        return self.adapter

    def events(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        adapter = self._adapter()
        check_features(self.config, request)
        stream = retrying(lambda: adapter.stream_chat(request), self.policy, self.breaker, self.config.provider_id)
        schema = output_schema(request.params.get("response_format"))
        return self._measured(validated(stream, schema) if schema is not None else stream)

    async def _measured(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """The one pass over a stream's events that feeds routing (in flight, TTFT average) and the metrics sink.

        It reads the upstream's events as they arrive, before coalescing: the first-token time is the upstream's,
        taken once, and every token is walked once here, not once for the counters and again for telemetry.
        """
        counters, metrics, provider = self.counters, self.metrics, self.config.provider_id
        counters["requests"] += 1
        self.in_flight += 1
        metrics.started(provider)
        started = time.perf_counter()
        ttft: float | None = None
        input_tokens = output_tokens = 0
        error: str | None = None  # an error event (an invalid structured output) ends the stream without raising
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    kind = event["type"]
                    if kind == "usage":
                        input_tokens += int(event.get("input_tokens") or 0)
                        output_tokens += int(event.get("output_tokens") or 0)
                    elif kind == "error":
                        error = str(event.get("error_type") or "api_error")
                    if ttft is None and kind != "status":
                        ttft = time.perf_counter() - started
                        self._first_token(ttft)
                    yield event
        except RelayError as exc:
            error = exc.error_type
            raise
        finally:
            self.in_flight -= 1
            duration = time.perf_counter() - started
            if input_tokens or output_tokens:
                metrics.tokens(provider, input_tokens, output_tokens)
            if error is not None:
                counters["errors"] += 1
                metrics.failed(provider, error)
            metrics.ended(provider)
            log_stream(provider, ttft, duration, (input_tokens, output_tokens), error)
        if error is None:
            counters["completed"] += 1
            counters["duration_ms_total"] += duration * 1000

    def _first_token(self, ttft_s: float) -> None:
        ttft_ms = ttft_s * 1000
        self.counters["ttft_ms_total"] += ttft_ms
        ewma = self.ttft_ewma_ms
        self.ttft_ewma_ms = ttft_ms if ewma is None else ewma + TTFT_EWMA_ALPHA * (ttft_ms - ewma)
        self.metrics.first_token(self.config.provider_id, ttft_s)

    def stats(self) -> dict[str, Any]:
        """Request, error and latency counters of this replica (``/api/stats``)."""
        c = self.counters
        return {
            "provider_id": self.config.provider_id,
            "provider_type": self.config.provider_type,
            "requests": c["requests"],
            "completed": c["completed"],
            "errors": c["errors"],
            "in_flight": self.in_flight,
            "mean_ttft_ms": round(c["ttft_ms_total"] / c["requests"], 2) if c["requests"] else None,
            "ttft_ewma_ms": round(self.ttft_ewma_ms, 2) if self.ttft_ewma_ms is not None else None,
            "mean_duration_ms": round(c["duration_ms_total"] / c["completed"], 2) if c["completed"] else None,
            "breaker": self.breaker.state,
        }

    def stream(self, request: ChatRequest) -> Batches:
        """Event batches: one per coalescing window, never one per token under load."""
        batches = coalesce(self.events(request), self.gauge, request.load_hint)
        return tracing.traced_stream(batches, request, self.config)

    async def health(self) -> dict[str, Any]:
        base = {
            "provider_id": self.config.provider_id,
            "provider_type": self.config.provider_type,
            "breaker": self.breaker.snapshot(),
            "active_streams": self.gauge.active,
            "requests": self.counters["requests"],
            "in_flight": self.in_flight,
            "ttft_ewma_ms": round(self.ttft_ewma_ms, 2) if self.ttft_ewma_ms is not None else None,
        }
        if self.adapter is None:
            return base | {"reachable": False, "ok": False, "error": str(self.unavailable)}
        probe = await self.adapter.health()
        return base | probe | {"ok": probe["ok"] and self.breaker.state == "closed"}

    async def aclose(self) -> None:
        if self.adapter is not None:
            await self.adapter.aclose()
