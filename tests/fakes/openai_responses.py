"""The Responses API of the fake OpenAI server: ``POST /v1/responses`` and Azure's ``POST /openai/responses``.

Mounted by ``tests.fakes.openai_upstream.FakeOpenAI``, it shares that fake's
keys (a 401 with OpenAI's bodies), its request records and its ``model``
scripts: the input is read as Chat messages, the chat fake's ``_script`` picks
the reply (echo, ``fake-tools``, ``fake-parallel-tools``, ``fake-call-…``,
``fake-reasoning``, ``fake-citations``, ``fake-429``, ``fake-status-<code>``,
``fake-flaky-<N>``, ``fake-midstream-error``, ``fake-drop``, ``fake-hang``…),
and its deltas are regrouped into output items: reasoning, then the message,
then the function calls, each streamed whole before the next (RESPONSES.md §3,
sequences a to c). ``max_output_tokens`` cuts the echo by words (a
``response.incomplete``); a mid-stream error is a ``response.failed``; a drop
cuts the connection. Streams have no ``[DONE]`` and carry usage only in the
terminal event.

Reasoning (``fake-reasoning``) is one item whose summary streams only when
``reasoning.summary`` is asked for, and whose ``encrypted_content`` (given only
when ``include`` has ``reasoning.encrypted_content``) encodes the item's id and
summary, so that a replayed item can be checked as OpenAI checks it.

Input is validated like the API (RESPONSES.md §2, §4): unknown parameters,
chat-shaped (nested) tools, ``max_output_tokens`` below 16, an output without
its call or a call without its output, a reasoning item without encrypted
content (404: nothing is stored) or with content that does not verify.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tests.fakes.openai_upstream import (
    HANG_S,
    IMAGE_URL,
    Dropped,
    Script,
    _cut_json,
    _disconnected,
    _error,
    _gone,
    _invalid,
    _not_one_of,
    _script,
    _watched,
)

if TYPE_CHECKING:
    from tests.fakes.openai_upstream import FakeOpenAI

__all__ = ["ENCRYPTED_PREFIX", "USAGE", "decrypt", "respond"]

# The create fields of RESPONSES.md §1; OpenAI answers any other key with 400 "Unknown parameter".
KNOWN_FIELDS = frozenset(
    {
        *("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning"),
        *("max_output_tokens", "max_tool_calls", "temperature", "top_p", "top_logprobs", "truncation", "metadata"),
        *("store", "previous_response_id", "conversation", "background", "background_options", "stream"),
        *("stream_options", "include", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention"),
        *("prompt_cache_options", "service_tier", "prompt", "context_management", "moderation"),
    }
)
INCLUDES = (
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
    "message.input_image.image_url",
    "web_search_call.action.sources",
    "web_search_call.results",
    "file_search_call.results",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
)
ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")
USER_PARTS = ("input_text", "input_image", "input_file")
ASSISTANT_PARTS = ("output_text", "refusal")
MIN_OUTPUT_TOKENS = 16
# Create fields a Response echoes, with the API's defaults.
ECHOED: dict[str, Any] = {
    **dict.fromkeys(("instructions", "max_output_tokens", "max_tool_calls", "prompt_cache_key", "user")),
    **{"safety_identifier": None, "parallel_tool_calls": True, "store": True, "temperature": 1.0, "top_p": 1.0},
    **{"top_logprobs": 0, "truncation": "disabled", "tool_choice": "auto"},
}
# OpenAI's encrypted reasoning is a Fernet token; this fake's is readable, with the same prefix.
ENCRYPTED_PREFIX = "gAAAAA"
USAGE = {
    "input_tokens": 7,
    "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
    "output_tokens": 4,
    "output_tokens_details": {"reasoning_tokens": 1},
    "total_tokens": 11,
}


def decrypt(encrypted: str) -> dict[str, Any] | None:
    """What this fake sealed in a reasoning item's ``encrypted_content``, or None if it is not the fake's."""
    if not encrypted.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        sealed = orjson.loads(base64.urlsafe_b64decode(encrypted[len(ENCRYPTED_PREFIX) :]))
    except (binascii.Error, ValueError):
        return None
    return sealed if isinstance(sealed, dict) else None


def _encrypt(item_id: str, summary: str) -> str:
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(orjson.dumps({"id": item_id, "summary": summary})).decode()


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    given = body["input"]
    return [{"role": "user", "content": given}] if isinstance(given, str) else given


def _kind(item: dict[str, Any]) -> Any:
    """``type`` is optional on messages and item references (§2)."""
    return item.get("type") or ("message" if "role" in item else "item_reference" if "id" in item else None)


def _validate(body: dict[str, Any]) -> Response | None:
    """The first of the checks OpenAI makes that ``body`` fails, as its error response."""
    for key in body:
        if key not in KNOWN_FIELDS:
            return _invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    for key in ("model", "input"):
        if body.get(key) is None:
            return _invalid(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    if body.get("stream_options") is not None and not body.get("stream"):
        return _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", None
        )
    if body["input"] == []:
        return _invalid(
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "input",
            "empty_array",
        )
    for i, value in enumerate(body.get("include") or ()):
        if value not in INCLUDES:
            return _invalid(_not_one_of(value, INCLUDES), f"include[{i}]", "invalid_value")
    limit = body.get("max_output_tokens")
    if limit is not None and limit < MIN_OUTPUT_TOKENS:
        return _invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, "
            f"but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") == "function" and not tool.get("name"):  # a Chat Completions tool nests it
            return _invalid(
                f"Missing required parameter: 'tools[{i}].name'.", f"tools[{i}].name", "missing_required_parameter"
            )
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_schema" and not text_format.get("name"):
        return _invalid(
            "Missing required parameter: 'text.format.name'.", "text.format.name", "missing_required_parameter"
        )
    return _validate_items(_items(body), body.get("store", True) is not False)


def _validate_items(items: list[dict[str, Any]], store: bool) -> Response | None:
    called: list[str] = []
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = _kind(item)
        if kind not in ITEM_TYPES:
            return _invalid(_not_one_of(kind, ITEM_TYPES), f"input[{i}].type", "invalid_value")
        if kind == "message":
            problem = _validate_message(item, f"input[{i}]")
            if problem:
                return problem
        elif kind == "function_call":
            called.append(item.get("call_id"))
        elif kind == "function_call_output":
            if item.get("call_id") not in called:
                message = f"No tool call found for function call output with call_id {item.get('call_id')}."
                return _invalid(message, "input", None)
            answered.add(item["call_id"])
        elif kind == "item_reference" or not item.get("encrypted_content"):
            return _not_stored(item.get("id"), store)
        else:
            sealed = decrypt(item["encrypted_content"])
            if sealed is None or (item.get("id") and sealed.get("id") != item["id"]):
                message = f"The encrypted content for item {item.get('id')} could not be verified."
                return _invalid(message, None, "invalid_encrypted_content")
            following = items[i + 1] if i + 1 < len(items) else {}
            if (
                _kind(following) not in ("message", "function_call")
                or following.get("role", "assistant") != "assistant"
            ):
                message = (
                    f"Item '{item.get('id')}' of type 'reasoning' was provided without its required following item."
                )
                return _invalid(message, "input", None)
    for call_id in called:
        if call_id not in answered:
            return _invalid(f"No tool output found for function call {call_id}.", "input", None)
    return None


def _not_stored(item_id: Any, store: bool) -> Response:
    """§4: with ``store: false`` nothing can be referenced; this fake stores nothing, so no id resolves."""
    message = f"Item with id '{item_id}' not found."
    if not store:
        message += (
            " Items are not persisted when `store` is set to false. Try again with `store` set to true, "
            "or remove this item from your input."
        )
    return _error(404, message, "invalid_request_error", None, param="input")


def _validate_message(item: dict[str, Any], where: str) -> Response | None:
    role = item.get("role")
    if role not in ROLES:
        return _invalid(_not_one_of(role, ROLES), f"{where}.role", "invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        return None
    allowed = ASSISTANT_PARTS if role == "assistant" else USER_PARTS
    for j, part in enumerate(content if isinstance(content, list) else [None]):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            return _invalid(_not_one_of(kind, allowed), f"{where}.content[{j}].type", "invalid_value")
        url = str(part.get("image_url") or "")
        if kind == "input_image" and not part.get("file_id") and not IMAGE_URL.fullmatch(url):
            return _invalid(
                f"Invalid image URL: '{where}.content[{j}].image_url'. Expected an http(s) URL or a base64-encoded "
                "data URL with an image MIME type.",
                f"{where}.content[{j}].image_url",
                "invalid_value",
            )
    return None


_CHAT_PARTS = {"input_text": "text", "output_text": "text", "input_image": "image_url", "input_file": "file"}


def _chat_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = [part | {"type": _CHAT_PARTS[part["type"]]} for part in content if part["type"] in _CHAT_PARTS]
    return parts


def _chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the chat fake's scripts read it: one assistant message per turn, tools by name."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})

    def assistant() -> dict[str, Any]:
        if not messages or messages[-1]["role"] != "assistant":
            messages.append({"role": "assistant", "content": None, "tool_calls": []})
        return messages[-1]

    for item in _items(body):
        kind = _kind(item)
        if kind == "message" and item["role"] == "assistant":
            assistant()["content"] = _chat_content(item["content"])
        elif kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            assistant()["tool_calls"].append({"id": item["call_id"], "type": "function", "function": call})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else " ".join(p.get("text", "") for p in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        else:
            assistant()
    tools = [{"type": "function", "function": {"name": t["name"]}} for t in body.get("tools") or () if "name" in t]
    return {"messages": messages, "tools": tools, "max_completion_tokens": body.get("max_output_tokens")}


@dataclass
class _Item:
    """One output item and what streams into it: text or summary deltas, annotations, argument fragments."""

    kind: str
    id: str
    ops: list[tuple[str, Any]] = field(default_factory=list)
    call_id: str = ""
    name: str = ""

    @property
    def text(self) -> str:
        return "".join(value for op, value in self.ops if op == "delta")

    @property
    def annotations(self) -> list[dict[str, Any]]:
        return [value for op, value in self.ops if op == "annotation"]


def _regroup(script: Script, number: int) -> list[_Item]:
    """The chat deltas as output items, in the order they open; parallel calls are no longer interleaved."""
    items: list[_Item] = []
    by_kind: dict[str, _Item] = {}
    calls: dict[int, _Item] = {}

    def opened(kind: str) -> _Item:
        if kind not in by_kind:
            by_kind[kind] = _Item(kind, f"{'rs' if kind == 'reasoning' else 'msg'}_fake{number}_{len(items)}")
            items.append(by_kind[kind])
        return by_kind[kind]

    for delta in script.deltas:
        for key in ("reasoning_content", "reasoning"):
            if key in delta:
                opened("reasoning").ops.append(("delta", delta[key]))
        if "content" in delta:
            opened("message").ops.append(("delta", delta["content"]))
        for annotation in delta.get("annotations", []):
            flat = {"type": annotation["type"], **annotation.get(annotation["type"], {})}
            opened("message").ops.append(("annotation", flat))
        for call in delta.get("tool_calls", []):
            if "id" in call:
                item = _Item("function_call", "fc_" + call["id"].removeprefix("call_"), call_id=call["id"])
                item.name = call["function"]["name"]
                calls[call["index"]] = item
                items.append(item)
            else:
                calls[call["index"]].ops.append(("delta", call["function"]["arguments"]))
    return items


class _Reply:
    """One response: its events (§3) and its final object (§1), both from the same items."""

    def __init__(self, body: dict[str, Any], model: str, script: Script, number: int) -> None:
        self.body = body
        self.model = model
        self.script = script
        self.id = f"resp_fake{number}"
        self.items = _regroup(script, number)
        self.summarize = bool((body.get("reasoning") or {}).get("summary"))
        self.encrypted = "reasoning.encrypted_content" in (body.get("include") or ())
        self.incomplete = script.finish_reason == "length"
        self.sequence = itertools.count()

    def response(self, status: str, output: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """Every key of a Response, ``null`` where unset (§1); ``fields`` set the terminal ones."""
        body = self.body
        reasoning = body.get("reasoning") or {}
        return (
            {"id": self.id, "object": "response", "created_at": 1700000000, "status": status, "background": False}
            | {"completed_at": 1700000001 if status == "completed" else None, "conversation": None, "error": None}
            | {"incomplete_details": None, "model": self.model, "output": output, "previous_response_id": None}
            | {key: body.get(key, default) for key, default in ECHOED.items()}
            | {"metadata": body.get("metadata") or {}, "tools": body.get("tools") or [], "service_tier": "default"}
            | {"reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}, "usage": None}
            | {"text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}, "verbosity": "medium"}}
            | fields
        )

    def final_item(self, item: _Item) -> dict[str, Any]:
        if item.kind == "function_call":
            return {
                "id": item.id,
                "type": "function_call",
                "status": "completed",
                "arguments": item.text,
                "call_id": item.call_id,
                "name": item.name,
            }
        if item.kind == "reasoning":
            summary = [{"type": "summary_text", "text": item.text}] if self.summarize else []
            sealed = {"encrypted_content": _encrypt(item.id, item.text)} if self.encrypted else {}
            return {"id": item.id, "type": "reasoning", "summary": summary} | sealed
        return {
            "id": item.id,
            "type": "message",
            "role": "assistant",
            "status": "incomplete" if self.incomplete else "completed",
            "content": [_text_part(item.text, item.annotations)],
        }

    def final(self) -> dict[str, Any]:
        """The terminal response: completed, or incomplete when ``max_output_tokens`` cut the reply."""
        output = [self.final_item(item) for item in self.items]
        if self.incomplete:
            details = {"reason": "max_output_tokens"}
            return self.response("incomplete", output, usage=USAGE, incomplete_details=details)
        return self.response("completed", output, usage=USAGE)

    def sse(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(self.sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        yield self.sse("response.created", response=self.response("in_progress", []))
        yield self.sse("response.in_progress", response=self.response("in_progress", []))
        closes = self.script.ending == "finish"
        for index, item in enumerate(self.items):
            stream = {"function_call": self._call, "reasoning": self._reasoning}.get(item.kind, self._message)
            for chunk in stream(index, item, closes):
                await asyncio.sleep(0)
                yield chunk
        if self.script.ending == "drop":
            raise Dropped("fake-drop cuts the connection")
        if self.script.ending == "error":
            output = [self.final_item(item) | {"status": "incomplete"} for item in self.items]
            error = {"code": "server_error", "message": "upstream broke"}
            yield self.sse("response.failed", response=self.response("failed", output, error=error))
            return
        final = self.final()
        yield self.sse(f"response.{final['status']}", response=final)

    def _message(self, index: int, item: _Item, closes: bool) -> Iterator[bytes]:
        at = {"item_id": item.id, "output_index": index, "content_index": 0}
        added = {"id": item.id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        yield self.sse("response.output_item.added", output_index=index, item=added)
        yield self.sse("response.content_part.added", **at, part=_text_part("", []))
        annotations = itertools.count()
        for op, value in item.ops:
            if op == "delta":
                yield self.sse("response.output_text.delta", **at, delta=value, logprobs=[])
            else:
                yield self.sse(
                    "response.output_text.annotation.added", **at, annotation_index=next(annotations), annotation=value
                )
        if closes:
            yield self.sse("response.output_text.done", **at, text=item.text, logprobs=[])
            yield self.sse("response.content_part.done", **at, part=_text_part(item.text, item.annotations))
            yield self.sse("response.output_item.done", output_index=index, item=self.final_item(item))

    def _call(self, index: int, item: _Item, closes: bool) -> Iterator[bytes]:
        added = self.final_item(item) | {"status": "in_progress", "arguments": ""}
        yield self.sse("response.output_item.added", output_index=index, item=added)
        at = {"item_id": item.id, "output_index": index}
        for _, fragment in item.ops:
            yield self.sse("response.function_call_arguments.delta", **at, delta=fragment)
        if closes:
            yield self.sse("response.function_call_arguments.done", **at, arguments=item.text, name=item.name)
            yield self.sse("response.output_item.done", output_index=index, item=self.final_item(item))

    def _reasoning(self, index: int, item: _Item, closes: bool) -> Iterator[bytes]:
        added = {"id": item.id, "type": "reasoning", "summary": []}
        yield self.sse("response.output_item.added", output_index=index, item=added)
        at = {"item_id": item.id, "output_index": index, "summary_index": 0}
        if self.summarize:
            yield self.sse("response.reasoning_summary_part.added", **at, part={"type": "summary_text", "text": ""})
            for _, delta in item.ops:
                yield self.sse("response.reasoning_summary_text.delta", **at, delta=delta)
            yield self.sse("response.reasoning_summary_text.done", **at, text=item.text)
            yield self.sse(
                "response.reasoning_summary_part.done", **at, part={"type": "summary_text", "text": item.text}
            )
        if closes:
            yield self.sse("response.output_item.done", output_index=index, item=self.final_item(item))


def _text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


async def respond(fake: FakeOpenAI, request: Request) -> Response:
    """``POST /v1/responses`` (bearer key) or ``POST /openai/responses`` (Azure's ``api-key`` and ``api-version``)."""
    body = await fake._record(request)
    refused: Callable[[Request], Response | None] = (
        fake._azure_refused if request.url.path.startswith("/openai/") else fake._refused
    )
    failure = refused(request)
    if failure:
        return failure
    if not isinstance(body, dict):
        return _invalid(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.", None, None
        )
    failure = _validate(body)
    if failure:
        return failure
    model, view = body["model"], _chat_view(body)
    failure = fake._failure(model, view)
    if failure:
        return failure
    if model == "fake-hang":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_disconnected(request), HANG_S)
            _gone(request.state.record)
    reply = _Reply(body, model, _script(model, view), len(fake.requests))
    if body.get("stream"):
        return StreamingResponse(_watched(reply.events(), request.state.record), media_type="text/event-stream")
    if reply.script.ending == "error":
        return _error(500, "The server had an error while processing your request.", "server_error", None)
    if reply.script.ending == "drop":
        return StreamingResponse(_cut_json(), media_type="application/json")
    return JSONResponse(reply.final())
