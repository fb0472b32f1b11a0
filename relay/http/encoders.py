"""Stream encoders: pure functions from event batches to bytes, one per wire format.

Each encoder takes a *batch* (a list of events) because batches are the unit
that crosses Ray hops; one batch becomes one write to the socket.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from relay.reply import Reply

__all__ = [
    "encode_sse",
    "encode_ndjson",
    "encode_text",
    "OpenAIChunkEncoder",
    "openai_completion",
    "FINISH_TO_OPENAI",
]

FINISH_TO_OPENAI = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",
    "cancelled": "stop",
}


def encode_sse(events: list[dict[str, Any]]) -> bytes:
    """Typed SSE: ``event: <type>``, ``id:`` when the event has one, JSON ``data:``."""
    out = bytearray()
    for event in events:
        out += b"event: " + event["type"].encode()
        if "id" in event:
            out += b"\nid: " + str(event["id"]).encode()
        out += b"\ndata: " + orjson.dumps(event) + b"\n\n"
    return bytes(out)


def encode_ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(event) + b"\n" for event in events)


def encode_text(events: list[dict[str, Any]]) -> bytes:
    """Plain text: the reply's words only; a failure is one bracketed line, so ``curl`` users still see it."""
    out = []
    for event in events:
        if event["type"] == "text-delta":
            out.append(event["content"])
        elif event["type"] == "error":
            out.append(f"\n[error: {event['message']}]\n")
    return "".join(out).encode()


class OpenAIChunkEncoder:
    """``chat.completion.chunk`` SSE, byte-compatible with what the openai SDK parses.

    One ``id`` and ``created`` per stream; the first chunk carries the role; the
    finish chunk has an empty delta; usage comes in its own chunk with
    ``choices: []`` when ``include_usage`` is set; the stream ends with ``[DONE]``.

    Calls to ``server_tools`` (the ones Relay runs itself) are not the client's
    to answer, so they are left out, as are their executions; with
    ``relay_events`` the client opted in to see them, each event whole in a
    ``relay_event`` field of a chunk with ``choices: []``.
    """

    def __init__(
        self,
        model: str,
        *,
        include_usage: bool = False,
        server_tools: frozenset[str] = frozenset(),
        relay_events: bool = False,
    ) -> None:
        self.model = model
        self.include_usage = include_usage
        self.server_tools = server_tools
        self.relay_events = relay_events
        self._server_calls: set[int] = set()
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self._started = False
        self._usage: dict[str, int] | None = None
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._frame(
            {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        )

    def _frame(self, body: dict[str, Any]) -> bytes:
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        return b"data: " + orjson.dumps(head | body) + b"\n\n"

    def start(self) -> bytes:
        self._started = True
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def encode(self, events: list[dict[str, Any]]) -> bytes:
        out = bytearray() if self._started else bytearray(self.start())
        text: list[str] = []
        for event in events:
            kind = event["type"]
            if kind == "text-delta":
                text.append(event["content"])
                continue
            if text:
                out += self._chunk({"content": "".join(text)})
                text = []
            if self._relays(event):
                if self.relay_events:
                    out += self._frame({"choices": [], "relay_event": event})
            elif kind == "reasoning-delta":
                out += self._chunk({"reasoning_content": event["content"]})
            elif kind == "tool-call-start":
                index = self._tool_index.setdefault(event["index"], len(self._tool_index))
                out += self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": event["tool_call_id"],
                                "type": "function",
                                "function": {"name": event["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            elif kind == "tool-call-delta":
                index = self._tool_index[event["index"]]
                out += self._chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": event["arguments_delta"]}}]}
                )
            elif kind == "citation":
                out += self._chunk({"annotations": [openai_annotation(event)]})
            elif kind == "usage":  # one per model call; a run with tool steps spends their sum
                self._usage = _added(self._usage, openai_usage(event))
            elif kind == "error":
                out += self._frame(
                    {"error": {"message": event["message"], "type": event["error_type"], "param": None, "code": None}}
                )
            elif kind == "finish":
                out += self._chunk({}, FINISH_TO_OPENAI[event["reason"]])
                if self.include_usage:
                    out += self._frame({"choices": [], "usage": self._usage or openai_usage({})})
                out += b"data: [DONE]\n\n"
        if text:
            out += self._chunk({"content": "".join(text)})
        return bytes(out)


    def _relays(self, event: dict[str, Any]) -> bool:
        """A server-side tool's call or execution: Relay's business, not the client's."""
        kind = event["type"]
        if kind.startswith("tool-execution-"):
            return True
        if kind == "tool-call-start" and event["name"] in self.server_tools:
            self._server_calls.add(event["index"])
        return kind.startswith("tool-call-") and event["index"] in self._server_calls


def _added(total: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, Any]:
    if total is None:
        return usage
    out: dict[str, Any] = {}
    for key, value in usage.items():
        out[key] = _added(total.get(key), value) if isinstance(value, dict) else (total.get(key) or 0) + value
    return out


def openai_annotation(citation: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``url_citation``; a document span (Anthropic) keeps its fields under ``document_citation``."""
    fields = {key: value for key, value in citation.items() if key != "type" and value is not None}
    kind = "url_citation" if citation.get("url") else "document_citation"
    return {"type": kind, kind: fields}


def openai_usage(event: dict[str, Any]) -> dict[str, Any]:
    prompt = event.get("input_tokens", 0)
    completion = event.get("output_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": event.get("cache_read_tokens", 0)},
        "completion_tokens_details": {"reasoning_tokens": event.get("reasoning_tokens", 0)},
    }


def openai_completion(reply: Reply, model: str, *, relay_events: bool = False) -> dict[str, Any]:
    """The whole reply; the tool calls Relay ran itself show only to a client that opted in (``relay_tool_calls``)."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if calls := reply.client_tool_calls():
        message["tool_calls"] = calls
    if relay_events and (executed := reply.executed_tool_calls()):
        message["relay_tool_calls"] = executed
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning_content
    if reply.citations:
        message["annotations"] = [openai_annotation(citation) for citation in reply.citations]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_TO_OPENAI[reply.finish_reason or "stop"],
            }
        ],
        "usage": openai_usage({"type": "usage", **reply.usage}),
    }
