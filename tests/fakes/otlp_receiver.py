"""A real OTLP/HTTP trace receiver on 127.0.0.1: ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest``.

It keeps every request's headers and body as they arrived (``raw``: what a key
must never be found in) and the spans decoded flat (``spans``): name, ids as hex, parent,
kind, attributes, event names, status, and the resource's attributes.

    .venv/bin/python -m tests.fakes.otlp_receiver --port 4318   # the benchmark runs it in a process of its own
"""

from __future__ import annotations

import argparse
import gzip
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["OtlpReceiver", "ReceivedSpan", "main"]


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    kind: int  # the protobuf enum: 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    events: dict[str, dict[str, Any]]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])

    async def _traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes=_attributes(span.attributes),
                            events={event.name: _attributes(event.attributes) for event in span.events},
                            status_code=span.status.code,
                            status_message=span.status.message,
                            resource=resource,
                        )
                    )
        headers = "".join(f"{name}: {value}\n" for name, value in request.headers.items()).encode("latin-1")
        with self._lock:
            self.raw.append(headers + body)
            self.spans.extend(received)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    def reset(self) -> None:
        with self._lock:
            self.raw.clear()
            self.spans.clear()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def received_bytes(self) -> bytes:
        with self._lock:
            return b"".join(self.raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(OtlpReceiver().app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
