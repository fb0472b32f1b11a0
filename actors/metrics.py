"""Relay's Prometheus metrics, through Ray's metrics (``ray.util.metrics``).

Each Ray node's metrics agent serves them on its metrics export port (``ray
start --metrics-export-port``; ``ray.nodes()[i]["MetricsExportPort"]``), with
Ray's ``ray_`` prefix: ``ray_relay_http_requests_total``, ``ray_relay_ttft_seconds``
and so on. Ray adds the process's labels (``WorkerId``, ``NodeAddress``), so a
gauge set by every ingress replica is one series per replica.

    relay_http_requests_total{route,method,status}   ingress
    relay_rate_limited_total{reason}                 ingress
    relay_active_streams                             ingress (streams it relays now)
    relay_sessions{state}                            ingress, from the directory (live, pooled, passivated)
    relay_pool_replicas{provider}                    ingress, from Serve (running replicas per pool)
    relay_provider_requests_total{provider}          pool
    relay_provider_errors_total{provider,error_type} pool
    relay_ttft_seconds{provider}                     pool (histogram)
    relay_tokens_total{provider,kind}                pool (kind: input, output)
    relay_pool_streams{provider}                     pool (streams the replica carries now)
    relay_cost_usd_total{provider,model}             session actors (priced model calls, relay.spend)
    relay_cost_tokens_total{provider,model,kind}     session actors (kind: input, cached_input, cache_write,
                                                     output, reasoning; priced or not)
    relay_unpriced_calls_total{provider,model}       session actors (calls to a model without a price)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from ray.util.metrics import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.spend import CallCost

__all__ = [
    "HttpMetrics",
    "IngressMetrics",
    "PoolMetrics",
    "SpendMetrics",
    "ingress_metrics",
    "pool_metrics",
    "spend_metrics",
    "TTFT_BUCKETS",
]

TTFT_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "relay_http_requests_total",
            description="HTTP requests and WebSocket connections the ingress answered.",
            tag_keys=("route", "method", "status"),
        )
        self.rate_limited = Counter(
            "relay_rate_limited_total", description="Turns refused by a per-user limit.", tag_keys=("reason",)
        )
        self.active_streams = Gauge("relay_active_streams", description="Streams this ingress replica relays now.")
        self.sessions = Gauge("relay_sessions", description="Sessions by state.", tag_keys=("state",))
        self.pool_replicas = Gauge(
            "relay_pool_replicas", description="Running replicas per provider pool.", tag_keys=("provider",)
        )


class PoolMetrics:
    """A ``relay.providers.telemetry.MetricsSink`` over Ray's metrics, for one pool replica."""

    def __init__(self) -> None:
        self.requests = Counter(
            "relay_provider_requests_total", description="Streams a pool started.", tag_keys=("provider",)
        )
        self.errors = Counter(
            "relay_provider_errors_total",
            description="Streams that ended in an error, by Relay error type.",
            tag_keys=("provider", "error_type"),
        )
        self.ttft = Histogram(
            "relay_ttft_seconds",
            description="Time from the pool's call to its first non-status event.",
            boundaries=TTFT_BUCKETS,
            tag_keys=("provider",),
        )
        self.tokens_total = Counter(
            "relay_tokens_total", description="Tokens reported by providers.", tag_keys=("provider", "kind")
        )
        self.streams = Gauge(
            "relay_pool_streams", description="Streams this replica carries now.", tag_keys=("provider",)
        )
        self._open: dict[str, int] = {}

    def started(self, provider: str) -> None:
        self.requests.inc(tags={"provider": provider})
        self._set_open(provider, 1)

    def first_token(self, provider: str, seconds: float) -> None:
        self.ttft.observe(seconds, tags={"provider": provider})

    def tokens(self, provider: str, input_tokens: int, output_tokens: int) -> None:
        if input_tokens:
            self.tokens_total.inc(input_tokens, tags={"provider": provider, "kind": "input"})
        if output_tokens:
            self.tokens_total.inc(output_tokens, tags={"provider": provider, "kind": "output"})

    def failed(self, provider: str, error_type: str) -> None:
        self.errors.inc(tags={"provider": provider, "error_type": error_type})

    def ended(self, provider: str) -> None:
        self._set_open(provider, -1)

    def _set_open(self, provider: str, change: int) -> None:
        self._open[provider] = self._open.get(provider, 0) + change
        self.streams.set(self._open[provider], tags={"provider": provider})


class SpendMetrics:
    """What model calls cost, by provider and model: counted where runs are costed (the session actors)."""

    def __init__(self) -> None:
        tags = ("provider", "model")
        self.cost = Counter("relay_cost_usd_total", description="USD of priced model calls.", tag_keys=tags)
        self.tokens = Counter(
            "relay_cost_tokens_total", description="Tokens of costed model calls, by kind.", tag_keys=(*tags, "kind")
        )
        self.unpriced = Counter(
            "relay_unpriced_calls_total", description="Model calls to a model without a price.", tag_keys=tags
        )

    def record(self, call: CallCost) -> None:
        tags = {"provider": call.provider, "model": call.model or ""}
        if call.usd is None:
            self.unpriced.inc(tags=tags)
        elif call.usd:
            self.cost.inc(call.usd, tags=tags)
        for kind, count in call.tokens.items():
            if count:
                self.tokens.inc(count, tags=tags | {"kind": kind})


@functools.cache
def ingress_metrics() -> IngressMetrics:
    """Made on first use, in the replica's process, and shared by everything in it."""
    return IngressMetrics()


@functools.cache
def pool_metrics() -> PoolMetrics:
    return PoolMetrics()


@functools.cache
def spend_metrics() -> SpendMetrics:
    return SpendMetrics()


class HttpMetrics:
    """Plain ASGI: count each request by its route's template (never the raw path: ids would explode the series).

    ``background`` starts with the first request, inside the replica's event loop: the gauges' reporter.
    """

    def __init__(self, app: ASGIApp, background: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        self.app = app
        self.background = background
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.task is None and self.background is not None:
            self.task = asyncio.create_task(self.background())
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status = ["0"]

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            elif message["type"] == "websocket.accept":
                status[0] = "101"
            elif message["type"] == "websocket.close" and status[0] == "0":
                status[0] = "403"  # closed before the handshake completed
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            tags = {
                "route": getattr(route, "path", "unmatched"),
                "method": scope.get("method", "WS"),
                "status": status[0],
            }
            ingress_metrics().requests.inc(tags=tags)
