"""OpenTelemetry traces of a chat request: off unless the standard ``OTEL_EXPORTER_OTLP_*`` variables ask for them.

One trace per request, three kinds of span, each made in the process that does the work::

    POST /v1/chat/completions   (SERVER; the ingress, a child of the client's ``traceparent``)
    └── relay.run               (the session actor: session, run, user; never the text)
        └── chat <model>        (CLIENT; the provider pool, one per stream, GenAI attributes)

The context crosses the Ray calls as a W3C ``traceparent`` string on
``ChatRequest``: the ingress sets it (``carry``), the session's run span is its
child and passes its own on to the pool (``traced_run``), where the provider
span is the run's child (``traced_stream``).

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, unless ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``; it is decided once per process, at import
(``configure`` decides again: tests). Off, every entry point here returns at
one flag test: the SDK is never imported, no span or wrapper is made. On, each
process builds its own ``TracerProvider`` with a batching OTLP/HTTP exporter on
its first span (``relay.tracing.otel``) and flushes it at exit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

from starlette.middleware import Middleware

if TYPE_CHECKING:
    from relay.config import ProviderConfig
    from relay.request import ChatRequest
    from relay.types import Batches

__all__ = [
    "TRACEPARENT",
    "carry",
    "configure",
    "enabled",
    "ingress_middleware",
    "shutdown",
    "traced_run",
    "traced_stream",
    "wanted",
]

# The ingress span of the request this task serves, as a ``traceparent``: what ``carry`` puts on its ChatRequest.
TRACEPARENT: ContextVar[str | None] = ContextVar("relay_traceparent", default=None)

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether these variables turn traces on (the OpenTelemetry spec's meaning of each)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINTS)


_ENABLED = wanted(os.environ)


def enabled() -> bool:
    return _ENABLED


def configure() -> bool:
    """Decide again from ``os.environ``: the previous provider, if any, is flushed and dropped. Returns ``enabled()``.

    Ray processes never need it (the environment is there at import); tests turn tracing on and off with it.
    """
    global _ENABLED
    shutdown()
    _ENABLED = wanted(os.environ)
    return _ENABLED


def shutdown() -> None:
    """Flush the spans not yet exported and stop this process's provider; a later span starts a new one."""
    if _ENABLED:
        from relay.tracing import otel

        otel.shutdown()


def ingress_middleware() -> list[Middleware]:
    """The HTTP server span's middleware for ``build_app``, or nothing when tracing is off."""
    if not _ENABLED:
        return []
    from relay.tracing.otel import IngressSpans

    return [Middleware(IngressSpans)]


def carry(request: ChatRequest, capture_content: bool) -> None:
    """At the ingress: the request travels with its ingress span's context, and whether spans may hold its text."""
    if _ENABLED:
        request.traceparent = request.traceparent or TRACEPARENT.get()
        request.trace_content = capture_content


def traced_run(
    start: Callable[[ChatRequest], Batches], request: ChatRequest, *, session_id: str, user_id: str
) -> Batches:
    """``start(request)``, inside a run span when tracing is on; the run's model calls are that span's children."""
    if not _ENABLED:
        return start(request)
    from relay.tracing.otel import run_span

    return run_span(start, request, session_id=session_id, user_id=user_id)


def traced_stream(batches: Batches, request: ChatRequest, config: ProviderConfig) -> Batches:
    """A provider stream, inside a GenAI client span when tracing is on."""
    if not _ENABLED:
        return batches
    from relay.tracing.otel import provider_span

    return provider_span(batches, request, config)
