"""Relay events to the OpenAI Responses API: the SSE stream and the Response object (RESPONSES.md).

One path serves both (STYLE.md): ``ResponsesEncoder.encode`` turns event batches
into SSE frames while folding them into the Response; a non-streamed body is
``encoder.response`` after the last batch.

- Ids are derived, never random: ``msg_|rs_|fc_|fco_<response hex>_<output index>``,
  so re-encoding stored events with a fresh encoder reproduces the stream byte
  for byte, and a resumed stream (§4 "Resume") is that re-encoding with
  sequence numbers ``<= N`` dropped (``replay``). ``completed_at`` is the one
  clock reading: when replaying a finished response pass a ``clock`` that
  returns the stored value.
- Frames depend on the events alone, never on how they are batched: each
  text-delta is its own ``output_text.delta``. A resumed stream gets the run
  log in other batches than the first reader did (a tail's catch-up is one
  batch), and joining a batch's deltas shifted every later sequence number, so
  ``starting_after`` skipped text never sent. Under load the provider's
  coalescer already joins adjacent deltas into one event, before the run log.
- A new item closes the open one with its ``.done`` events first (§3 rules 2, 5).
  Relay adapters emit one tool call's deltas contiguously; a delta for a call
  already closed is dropped.
- Reasoning is a ``reasoning`` item with ONE ``summary_text`` part (§3 (c)). A
  reasoning-delta carrying ``signature`` (Anthropic) or ``encrypted_content``
  (an OpenAI Responses upstream) closes it; with ``include_encrypted`` the done
  item carries ``encrypted_content``: ``"relay.anthropic." + signature``, or the
  upstream's string verbatim (``responses_input`` reads both back).
- Calls to ``server_tools`` and Relay's tool executions show as what they are, a
  ``function_call`` and a ``function_call_output`` item, each marked
  ``"relay": {"executed": true}``: openai-python keeps unknown keys (§0), and
  ``function_call_output`` is an output item type in openai-python 3.60.
- ``stop``/``tool_calls`` → ``response.completed``; ``length``/``content_filter``
  → ``response.incomplete`` with that ``incomplete_details``; an ``error`` event
  → ``response.failed`` alone, never a flat ``error`` event (§3 (d)).
- ``cancelled`` → ``response.failed`` carrying ``status: "cancelled"`` and
  ``error.code: "response_cancelled"`` [unverified]. There is no
  ``response.cancelled`` in the SDK union and an invented event breaks clients
  (§0); ``failed`` is a terminal the openai helper accepts (§3 rule 4) and the
  Agents SDK raises on, whereas ``incomplete`` without a reason lets the AI SDK
  finish with ``stop``/``tool-calls`` and act on a cut-off reply.
- Events after the terminal one are ignored: exactly one terminal (§3 rule 4).
  ``status``, ``warning`` and ``cache-hit`` produce nothing (§0).
- Document citations (Anthropic spans without a URL) have no Responses
  annotation and are left out; a ``url_citation`` without a span is indexed at
  the text's end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from relay.wire.responses_object import ANTHROPIC_PREFIX, error_event, response_skeleton, responses_usage

__all__ = ["ResponsesEncoder", "response_skeleton", "responses_usage", "replay", "error_event", "ANTHROPIC_PREFIX"]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# Responses error codes (§1 "error"); a Relay error event's own ``code`` wins.
_CODE_OF_TYPE = {"rate_limit_error": "rate_limit_exceeded", "invalid_request_error": "invalid_prompt"}
_CANCELLED = {
    "code": "response_cancelled",
    "message": "The response was cancelled.",
    "type": "cancelled",
    "param": None,
}
_MARK = {"executed": True}
_DELTA = "response.output_text.delta"
_DELTA_HEAD = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'


@dataclass(slots=True)
class _Open:
    """The item being streamed: its place in ``output`` and what its ``.done`` events will carry."""

    kind: str
    index: int
    id: str
    parts: list[str] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    item: dict[str, Any] = field(default_factory=dict)  # the ``added`` form; function calls keep call_id, name
    relay_index: int | None = None  # a function call's Relay tool-call index
    encrypted: str | None = None
    # A message's output_text.delta frame around its two variable parts (sequence number, delta), built once.
    delta_frame: tuple[bytes, bytes] = (b"", b"")


class ResponsesEncoder:
    """Relay event batches to Responses SSE bytes (§3), folding them into ``response`` as it goes.

    ``start()`` opens the stream: ``response.created`` then ``response.in_progress``. A background
    response is created queued: ``start(queued=True)`` sends ``created`` (status queued) then
    ``response.queued``, and ``begin()`` sends ``response.in_progress`` once the run starts (§4
    "Background"). ``encode`` starts or begins by itself when the caller has not.
    """

    def __init__(
        self,
        response: dict[str, Any],
        *,
        include_encrypted: bool = False,
        server_tools: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.time,
        skip_through: int = -1,
    ) -> None:
        self._response = dict(response)
        self._hex = response["id"].removeprefix("resp_")
        self.include_encrypted = include_encrypted
        self.server_tools = server_tools
        self.clock = clock
        # Frames numbered ``<= skip_through`` are built (state must advance) but not returned: a resumed stream.
        self.skip_through = skip_through
        self._seq = 0
        self._phase = "new"  # new → queued → running → done
        self._items: list[dict[str, Any]] = []
        self._open: _Open | None = None
        self._call_ids: set[str] = set()
        self._usage: dict[str, int] | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], bytes]] = {
            "reasoning-delta": self._reasoning,
            "tool-call-start": self._call_start,
            "tool-call-delta": self._call_delta,
            "tool-call-end": self._call_end,
            "tool-execution-start": self._execution_start,
            "tool-execution-end": self._execution_end,
            "citation": self._citation,
            "usage": self._add_usage,
            "error": self._error,
            "finish": self._finish,
        }

    @property
    def sequence(self) -> int:
        """How many events were numbered so far: the next ``sequence_number``."""
        return self._seq

    @property
    def done(self) -> bool:
        return self._phase == "done"

    @property
    def response(self) -> dict[str, Any]:
        """The Response as of now; after the terminal event, the non-streamed body."""
        output = list(self._items)
        if self._open is not None:
            output[self._open.index] = self._item(self._open, "in_progress")
        return self._response | {"output": output}

    def _frame(self, kind: str, body: dict[str, Any]) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        if seq <= self.skip_through:
            return b""
        data = orjson.dumps({"type": kind, "sequence_number": seq} | body)
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _lifecycle(self, kind: str, status: str) -> bytes:
        # §3: created / queued / in_progress carry ``output: []`` and ``usage: null``.
        return self._frame(kind, {"response": self._response | {"status": status, "output": [], "usage": None}})

    def start(self, *, queued: bool = False) -> bytes:
        if self._phase != "new":
            return b""
        status = "queued" if queued else "in_progress"
        self._response["status"] = status
        self._phase = "queued" if queued else "running"
        created = self._lifecycle("response.created", status)
        return created + self._lifecycle("response.queued" if queued else "response.in_progress", status)

    def begin(self) -> bytes:
        """A queued response's run starts: ``response.in_progress``."""
        if self._phase != "queued":
            return b""
        self._phase = "running"
        self._response["status"] = "in_progress"
        return self._lifecycle("response.in_progress", "in_progress")

    def encode(self, batch: list[dict[str, Any]]) -> bytes:
        if self._phase != "running":
            if self._phase == "done":
                return b""
            out = bytearray(self.start() if self._phase == "new" else self.begin())
        else:
            out = bytearray()
        handlers = self._handlers
        for event in batch:
            kind = event["type"]
            if kind == "text-delta":
                out += self._text(event["content"])
                continue
            handler = handlers.get(kind)
            if handler is not None:
                out += handler(event)
                if self._phase == "done":
                    return bytes(out)
        return bytes(out)

    # -- items ---------------------------------------------------------------------------------------------------

    def _add(self, kind: str, prefix: str, item: dict[str, Any]) -> tuple[_Open, bytes]:
        out = self._close("completed")
        index = len(self._items)
        item = {"id": f"{prefix}_{self._hex}_{index}", "type": kind} | item
        opened = _Open(kind, index, item["id"], item=item)
        self._items.append(item)
        self._open = opened
        return opened, out + self._frame("response.output_item.added", {"output_index": index, "item": item})

    def _item(self, opened: _Open, status: str) -> dict[str, Any]:
        """The item as its ``output_item.done`` (or a mid-run ``response`` snapshot) shows it."""
        kind = opened.kind
        if kind == "message":
            return opened.item | {"status": status, "content": [self._part(opened)]}
        if kind == "reasoning":
            item = opened.item | {"summary": [{"type": "summary_text", "text": "".join(opened.parts)}]}
            return item | {"encrypted_content": opened.encrypted} if self.include_encrypted else item
        return opened.item | {"status": status, "arguments": "".join(opened.parts)}

    @staticmethod
    def _part(opened: _Open) -> dict[str, Any]:
        return {"type": "output_text", "text": "".join(opened.parts), "annotations": opened.annotations, "logprobs": []}

    def _close(self, status: str) -> bytes:
        opened = self._open
        if opened is None:
            return b""
        self._open = None
        where = {"item_id": opened.id, "output_index": opened.index}
        if opened.kind == "message":
            part = self._part(opened)
            out = self._frame(
                "response.output_text.done", where | {"content_index": 0, "text": part["text"], "logprobs": []}
            )
            out += self._frame("response.content_part.done", where | {"content_index": 0, "part": part})
        elif opened.kind == "reasoning":
            text = "".join(opened.parts)
            out = self._frame("response.reasoning_summary_text.done", where | {"summary_index": 0, "text": text})
            part = {"type": "summary_text", "text": text}
            out += self._frame("response.reasoning_summary_part.done", where | {"summary_index": 0, "part": part})
        else:
            args = {"arguments": "".join(opened.parts), "name": opened.item["name"]}
            out = self._frame("response.function_call_arguments.done", where | args)
        item = self._items[opened.index] = self._item(opened, status)
        return out + self._frame("response.output_item.done", {"output_index": opened.index, "item": item})

    def _text(self, content: str) -> bytes:
        opened = self._open
        out = b""
        if opened is None or opened.kind != "message":
            opened, out = self._open_message()
        if not content:
            return out
        opened.parts.append(content)
        seq = self._seq
        self._seq = seq + 1
        if seq <= self.skip_through:
            return out
        # The per-token path: the frame is prebuilt around the sequence number and the delta, the only parts that
        # change; one orjson call per token (benchmarks/bench_encoders.py measures it against the chunk encoder).
        middle, tail = opened.delta_frame
        return out + _DELTA_HEAD + str(seq).encode() + middle + orjson.dumps(content) + tail

    def _open_message(self) -> tuple[_Open, bytes]:
        opened, out = self._add("message", "msg", {"role": "assistant", "status": "in_progress", "content": []})
        where = orjson.dumps({"item_id": opened.id, "output_index": opened.index, "content_index": 0})
        opened.delta_frame = (b"," + where[1:-1] + b',"delta":', b',"logprobs":[]}\n\n')
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": opened.id, "output_index": opened.index, "content_index": 0}
        return opened, out + self._frame("response.content_part.added", where | {"part": part})

    def _reasoning(self, event: dict[str, Any]) -> bytes:
        opened = self._open
        out = b""
        if opened is None or opened.kind != "reasoning":
            opened, out = self._add("reasoning", "rs", {"summary": []})
            part = {"type": "summary_text", "text": ""}
            where = {"item_id": opened.id, "output_index": opened.index, "summary_index": 0}
            out += self._frame("response.reasoning_summary_part.added", where | {"part": part})
        if event["content"]:
            opened.parts.append(event["content"])
            where = {"item_id": opened.id, "output_index": opened.index, "summary_index": 0}
            out += self._frame("response.reasoning_summary_text.delta", where | {"delta": event["content"]})
        if event.get("signature"):
            opened.encrypted = ANTHROPIC_PREFIX + event["signature"]
        elif event.get("encrypted_content"):
            opened.encrypted = event["encrypted_content"]
        if opened.encrypted is not None:
            out += self._close("completed")
        return out

    def _call_start(self, event: dict[str, Any]) -> bytes:
        item: dict[str, Any] = {"status": "in_progress", "arguments": "", "call_id": event["tool_call_id"]}
        item["name"] = event["name"]
        if event["name"] in self.server_tools:
            item["relay"] = _MARK
        opened, out = self._add("function_call", "fc", item)
        opened.relay_index = event["index"]
        self._call_ids.add(event["tool_call_id"])
        return out

    def _call_delta(self, event: dict[str, Any]) -> bytes:
        opened = self._open
        if opened is None or opened.relay_index != event["index"] or opened.kind != "function_call":
            return b""
        opened.parts.append(event["arguments_delta"])
        where = {"item_id": opened.id, "output_index": opened.index}
        return self._frame("response.function_call_arguments.delta", where | {"delta": event["arguments_delta"]})

    def _call_end(self, event: dict[str, Any]) -> bytes:
        opened = self._open
        if opened is None or opened.relay_index != event["index"] or opened.kind != "function_call":
            return b""
        opened.parts = [event["arguments"]]  # the adapter's joined arguments are the authority
        return self._close("completed")

    def _execution_start(self, event: dict[str, Any]) -> bytes:
        """Nothing, unless no call event announced this execution: then its function_call item, whole."""
        if event["tool_call_id"] in self._call_ids:
            return b""
        self._call_ids.add(event["tool_call_id"])
        item = {"status": "in_progress", "arguments": "", "call_id": event["tool_call_id"], "name": event["name"]}
        opened, out = self._add("function_call", "fc", item | {"relay": _MARK})
        opened.parts = [event["arguments"]]
        return out + self._close("completed")

    def _execution_end(self, event: dict[str, Any]) -> bytes:
        failed = event.get("error") is not None
        mark = {"executed": True, "is_error": failed}
        item = {"status": "in_progress", "call_id": event["tool_call_id"], "output": "", "relay": mark}
        opened, out = self._add("function_call_output", "fco", item)
        self._open = None
        done = opened.item | {"status": "completed", "output": event["error"] if failed else event.get("result") or ""}
        self._items[opened.index] = done
        return out + self._frame("response.output_item.done", {"output_index": opened.index, "item": done})

    def _citation(self, event: dict[str, Any]) -> bytes:
        if not event.get("url"):
            return b""
        opened = self._open
        out = b""
        if opened is None or opened.kind != "message":
            opened, out = self._open_message()
        end = sum(map(len, opened.parts))
        annotation = {
            "type": "url_citation",
            "start_index": end if event.get("start_index") is None else event["start_index"],
            "end_index": end if event.get("end_index") is None else event["end_index"],
            "url": event["url"],
            "title": event.get("title") or "",
        }
        where = {"item_id": opened.id, "output_index": opened.index, "content_index": 0}
        where["annotation_index"] = len(opened.annotations)
        opened.annotations.append(annotation)
        return out + self._frame("response.output_text.annotation.added", where | {"annotation": annotation})

    def _add_usage(self, event: dict[str, Any]) -> bytes:
        # One usage event per model call: a run with tool steps spends their sum.
        total = self._usage if self._usage is not None else {}
        for key, value in event.items():
            if key.endswith("_tokens"):
                total[key] = total.get(key, 0) + value
        self._usage = total
        return b""

    # -- terminal ------------------------------------------------------------------------------------------------

    def _error(self, event: dict[str, Any]) -> bytes:
        code = event.get("code") or _CODE_OF_TYPE.get(event.get("error_type", ""), "server_error")
        error = {"code": code, "message": event["message"], "type": event.get("error_type", "server_error")}
        return self._terminal("response.failed", "failed", error=error | {"param": event.get("param")})

    def _finish(self, event: dict[str, Any]) -> bytes:
        reason = event["reason"]
        if reason in _INCOMPLETE:
            return self._terminal("response.incomplete", "incomplete", incomplete={"reason": _INCOMPLETE[reason]})
        if reason == "cancelled":
            return self._terminal("response.failed", "cancelled", error=_CANCELLED)
        if reason == "error":
            error = {"code": "server_error", "message": "The run failed.", "type": "server_error", "param": None}
            return self._terminal("response.failed", "failed", error=error)
        return self._terminal("response.completed", "completed")

    def _terminal(
        self,
        kind: str,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        incomplete: dict[str, str] | None = None,
    ) -> bytes:
        out = self._close("completed" if status == "completed" else "incomplete")
        self._phase = "done"
        self._response |= {
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "usage": responses_usage(self._usage),
            "completed_at": int(self.clock()) if status == "completed" else None,
        }
        return out + self._frame(kind, {"response": self.response})


def replay(
    encoder: ResponsesEncoder, batches: list[list[dict[str, Any]]], starting_after: int, *, queued: bool = False
) -> bytes:
    """A resumed stream: the stored run re-encoded from ``response.created``, frames ``<= starting_after`` dropped.

    ``encoder`` is fresh, built like the original (same skeleton, flags and, for a finished response, a clock
    returning its ``completed_at``). ``queued``: the response was created queued and its run has started. The
    encoder keeps dropping frames ``<= starting_after``, so it can go on encoding the live batches.
    """
    encoder.skip_through = starting_after
    out = bytearray(encoder.start(queued=queued))
    if queued:
        out += encoder.begin()
    for batch in batches:
        out += encoder.encode(batch)
    return bytes(out)
