"""The spans themselves, over the OpenTelemetry SDK: imported only once ``relay.tracing`` found tracing on.

Each process has its own ``TracerProvider`` (made on its first span) whose
``BatchSpanProcessor`` hands spans to the OTLP/HTTP exporter on a thread of
its own, so a span costs the stream a few attribute writes, never a network
call. The exporter reads the standard variables (endpoint, headers, timeout,
compression); ``OTEL_SERVICE_NAME`` names the service (``relay`` otherwise).

The provider span's attributes follow the GenAI semantic conventions
(``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.*``,
``gen_ai.response.finish_reasons``); the first token is a span event. Text
(``gen_ai.input.messages``, ``gen_ai.output.messages``) is recorded only when
the request says ``trace_content`` (``tracing.capture_content``), and every
text that goes on a span (content, error messages) passes ``REDACTOR``: a key
pasted into a prompt or echoed in an upstream error never leaves the process.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.config import ProviderConfig
from relay.errors import RelayError
from relay.logs import REDACTOR, REQUEST_ID
from relay.request import ChatRequest
from relay.tracing import TRACEPARENT
from relay.types import Batch, Batches, Event

__all__ = ["IngressSpans", "provider_span", "run_span", "shutdown", "tracer"]

_PROPAGATOR = TraceContextTextMapPropagator()
# gen_ai.system: the conventions' names; an OpenAI-compatible server speaks "openai".
_SYSTEMS = {"openai_compatible": "openai"}
_REQUEST_PARAMS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
}

# The events a span reads besides the text; the rest (reasoning, tool calls, citations) pass untouched.
_NOTED = frozenset(("status", "usage", "finish", "error"))

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_exit_hook = False


def tracer() -> Tracer:
    """This process's tracer, its provider and exporter made on the first call."""
    global _provider, _tracer, _exit_hook
    if _tracer is not None:
        return _tracer
    with _lock:
        if _tracer is None:
            resource = Resource.create({"process.pid": os.getpid()})
            if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
                resource = resource.merge(Resource({"service.name": "relay"}))
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            if not _exit_hook:
                atexit.register(shutdown)  # a Ray worker's orderly exit exports what is still queued
                _exit_hook = True
            _provider, _tracer = provider, provider.get_tracer("relay")
        return _tracer


def shutdown() -> None:
    global _provider, _tracer
    with _lock:
        provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _parent(traceparent: str | None) -> Context | None:
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


def _traceparent(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _fail(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, REDACTOR.redact(message)))


def _failed_with(span: Span, exc: BaseException) -> None:
    if isinstance(exc, RelayError):
        _fail(span, exc.error_type, str(exc))
    else:
        _fail(span, type(exc).__qualname__, str(exc))


class IngressSpans:
    """Plain ASGI: an HTTP server span per request, a child of the client's ``traceparent`` when it sends one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a WebSocket lives for many runs: its runs are traces of their own
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope["scheme"]}
        if request_id := REQUEST_ID.get():
            attributes["relay.request_id"] = request_id
        span = tracer().start_span(
            method, context=_PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        )
        status = [500]  # what a request that fails before answering gets from Starlette

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        token = TRACEPARENT.set(_traceparent(span))
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            _failed_with(span, exc)
            raise
        except BaseException:  # the caller went away
            span.set_attribute("relay.cancelled", True)
            raise
        finally:
            TRACEPARENT.reset(token)
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{method} {route}")
            span.set_attribute("http.response.status_code", status[0])
            if status[0] >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()


@dataclasses.dataclass(slots=True)
class _Tally:
    """What a stream's events tell its span, gathered as they pass and set once, when it ends."""

    span: Span
    started_ns: int
    text: list[str] | None  # the reply, only when the request allows content
    first: bool = True
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    reasons: list[str] = dataclasses.field(default_factory=list)

    def add(self, batch: Batch) -> None:
        if self.first and any(event["type"] != "status" for event in batch):
            self.first = False
            ttft_ms = (time.perf_counter_ns() - self.started_ns) / 1e6
            self.span.add_event("gen_ai.first_token", {"relay.ttft_ms": round(ttft_ms, 3)})
        text = self.text
        for event in batch:
            kind = event["type"]
            if kind == "text-delta":  # nearly every event is one, so it is tested first
                if text is not None:
                    text.append(event["content"])
            elif kind in _NOTED:
                self._note(kind, event)

    def _note(self, kind: str, event: Event) -> None:
        if kind == "status":
            if run_id := event.get("run_id"):
                self.span.set_attribute("relay.run_id", run_id)
            else:
                self.span.add_event("relay.status", {"relay.status": str(event["status"])})
        elif kind == "usage":
            self.input_tokens += int(event.get("input_tokens") or 0)
            self.output_tokens += int(event.get("output_tokens") or 0)
            if event.get("cost_usd") is not None:
                self.cost = (self.cost or 0.0) + float(event["cost_usd"])
        elif kind == "finish":
            self.reasons.append(str(event["reason"]))
            cost = event.get("cost_usd", (event.get("metrics") or {}).get("cost_usd"))
            if cost is not None:  # the run's own total, when spend tracking put one there
                self.cost = float(cost)
        else:
            _fail(self.span, str(event.get("error_type") or "api_error"), str(event.get("message") or ""))

    def close(self) -> None:
        span = self.span
        if self.input_tokens or self.output_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", self.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", self.output_tokens)
        if self.reasons:
            span.set_attribute("gen_ai.response.finish_reasons", self.reasons)
        if self.cost is not None:
            span.set_attribute("relay.cost_usd", self.cost)
        if self.text is not None:
            reply = [{"role": "assistant", "content": "".join(self.text)}]
            span.set_attribute("gen_ai.output.messages", _content(reply))
        span.end()


async def _traced(start_span: Callable[[], Span], open_batches: Callable[[Span], Batches], keep_text: bool) -> Batches:
    """The span starts at the first batch asked for: a stream dropped before it starts makes no span, none left open."""
    span = start_span()
    tally = _Tally(span, time.perf_counter_ns(), [] if keep_text else None)
    try:
        batches = open_batches(span)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                tally.add(batch)
                yield batch
    except Exception as exc:
        _failed_with(span, exc)
        raise
    except BaseException:  # closed early or its task cancelled: its consumer stopped it, no error of its own
        span.set_attribute("relay.cancelled", True)
        raise
    finally:
        tally.close()


def run_span(
    start: Callable[[ChatRequest], Batches], request: ChatRequest, *, session_id: str, user_id: str
) -> Batches:
    """The run's span (a child of the ingress's); the request ``start`` runs carries it on to the pools."""
    attributes: dict[str, Any] = {
        "relay.session_id": session_id,
        "enduser.id": user_id,
        "relay.provider": request.provider,
    }
    for key, value in (
        ("relay.run_id", request.run_id),
        ("relay.request_id", request.request_id),
        ("gen_ai.request.model", request.model),
    ):
        if value:
            attributes[key] = value
    parent = _parent(request.traceparent)
    return _traced(
        lambda: tracer().start_span("relay.run", context=parent, attributes=attributes),
        lambda span: start(dataclasses.replace(request, traceparent=_traceparent(span))),
        keep_text=False,
    )


def provider_span(batches: Batches, request: ChatRequest, config: ProviderConfig) -> Batches:
    """The GenAI client span of one upstream stream (its retries included), a child of the run's."""
    model = request.model or config.default_model
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": _SYSTEMS.get(config.provider_type, config.provider_type),
        "relay.provider": config.provider_id,
    }
    if model:
        attributes["gen_ai.request.model"] = model
    if request.request_id:
        attributes["relay.request_id"] = request.request_id
    for param, name in _REQUEST_PARAMS.items():
        value = request.params.get(param)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[f"gen_ai.request.{name}"] = value
    if request.trace_content:
        attributes["gen_ai.input.messages"] = _content(request.messages)
    parent = _parent(request.traceparent)
    name = f"chat {model}" if model else "chat"
    return _traced(
        lambda: tracer().start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes),
        lambda span: batches,
        keep_text=request.trace_content,
    )


def _content(messages: list[dict[str, Any]]) -> str:
    """Messages as the conventions' JSON (role and text parts; media stays out), redacted."""
    shown = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if part.get("type") == "text")
        shown.append({"role": message.get("role"), "content": content or ""})
    return REDACTOR.redact(orjson.dumps(shown).decode())
