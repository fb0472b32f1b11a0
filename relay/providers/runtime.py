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
from relay.request import ChatRequest
from relay.types import Batches

__all__ = ["ProviderRuntime", "TTFT_EWMA_ALPHA"]

# Weight of the newest sample in the moving TTFT average that latency routing reads (~the last 10 requests).
TTFT_EWMA_ALPHA = 0.2


class ProviderRuntime:
    def __init__(
        self, config: ProviderConfig, gauge: LoadGauge, *, http_client: httpx2.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.gauge = gauge
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
        counters = self.counters
        counters["requests"] += 1
        self.in_flight += 1
        started = time.perf_counter()
        first = True
        failed = False  # an error event (an invalid structured output) ends the stream without raising
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if first and event["type"] != "status":
                        ttft_ms = (time.perf_counter() - started) * 1000
                        counters["ttft_ms_total"] += ttft_ms
                        ewma = self.ttft_ewma_ms
                        self.ttft_ewma_ms = ttft_ms if ewma is None else ewma + TTFT_EWMA_ALPHA * (ttft_ms - ewma)
                        first = False
                    failed = failed or event["type"] == "error"
                    yield event
        except RelayError:
            counters["errors"] += 1
            raise
        finally:
            self.in_flight -= 1
        if failed:
            counters["errors"] += 1
            return
        counters["completed"] += 1
        counters["duration_ms_total"] += (time.perf_counter() - started) * 1000

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
