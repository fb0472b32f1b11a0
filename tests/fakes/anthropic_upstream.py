"""A fake Anthropic Messages server on 127.0.0.1, speaking the wire format of WIRE.md.

Routes: ``POST /v1/messages`` and ``GET /v1/models``. Each needs the fake's key (else 401), as ``x-api-key`` or
as ``Authorization: Bearer`` (how anthropic-sdk-python 2.x sends ``api_key``), and an ``anthropic-version``
header (else 400). Bodies are validated like the Messages API does (400 with an Anthropic
error body, see ``_validate``) and every request is recorded in ``requests``. With ``thinking`` enabled, the
last assistant turn, when it calls tools, must start with a thinking block, and every thinking block sent back
must carry the signature the fake gave it (``signature(thinking)``), as the real API demands.

A stream is ``message_start`` (usage with cache tokens), an unknown ``future_event`` that clients must ignore,
the content blocks (one ``ping`` after the first block's start), ``message_delta`` with the cumulative
``output_tokens``, then ``message_stop``. A non-stream request gets the same reply as one message.

The ``model`` picks a script:

- ``fake-claude``, and any unknown model: echoes the text of the last user message that has text (its text
  blocks joined by spaces), cut before the first of ``stop_sequences`` found in it (``stop_sequence``) and to
  ``max_tokens`` words (``max_tokens``). With ``tool_choice: {type: "tool", name}``, it calls that tool instead
  with the echo text parsed as JSON as its input: an object as it is; any other value under the schema's one
  required property when it has exactly one (else ``{}``); in fragments; ``tool_use``.
- any model but the failing ones, when the last user message holds ``tool_result`` blocks:
  ``Tool said: <the first one's content>``; ``end_turn``.
- ``fake-tools``: ``Let me check.``, then ``toolu_01A`` calls the first tool of ``tools`` (else ``get_weather``)
  with ``{"city": "Paris"}`` in fragments; ``tool_use``.
- ``fake-parallel-tools``: ``toolu_01A`` (Paris, index 0) and ``toolu_01B`` (Rome, index 1); ``tool_use``.
- ``fake-thinking``, and any script but a reply to tool results when ``thinking`` is enabled: a thinking block
  first (two ``thinking_delta``, one ``signature_delta``), then the script (the echo for ``fake-thinking``).
- ``fake-citations``: a text block with a ``char_location`` ``citations_delta`` between its text deltas.
- ``fake-flaky-<N>``: per (model, echo text), the first N requests get 429 ``rate_limit_error``
  (``retry-after: 0``: the API sends whole seconds, and tests need no wait); later ones act as ``fake-claude``.
- ``fake-overloaded-flaky-<N>``: the same with 529 ``overloaded_error``.
- ``fake-status-<code>`` for 400, 401, 403, 404, 413, 429, 500, 529: that status with its error type (see
  ``STATUS_ERRORS``).
- ``fake-midstream-error``: two text deltas, then ``event: error`` (``overloaded_error``) ends the body; a
  non-stream request gets 529.
- ``fake-drop``: three text deltas, then the connection is cut without ``message_stop`` (a non-stream request
  gets a cut JSON body).
- ``fake-hang``: waits 30 s (or until the client goes away), then acts as ``fake-claude``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.openai_upstream import Dropped, ServerThread, free_port

__all__ = ["FakeAnthropic", "ServerThread", "free_port", "signature"]

MESSAGE_ID = "msg_fake01"
REQUEST_ID = "req_fake"
USAGE = {"input_tokens": 11, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5}
MODELS = {
    "data": [
        {"type": "model", "id": "fake-claude", "display_name": "Fake Claude", "created_at": "2025-01-01T00:00:00Z"}
    ],
    "has_more": False,
    "first_id": "fake-claude",
    "last_id": "fake-claude",
}
ROLES = ("user", "assistant")
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
BLOCK_FIELDS = {
    "text": ("text",),
    "image": ("source",),
    "document": ("source",),
    "tool_use": ("id", "name", "input"),
    "tool_result": ("tool_use_id",),
    "thinking": ("thinking", "signature"),
    "redacted_thinking": ("data",),
}
# block type: {source type: the media types it allows, or None for a url source}
SOURCES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "image": {"base64": ("image/jpeg", "image/png", "image/gif", "image/webp"), "url": None},
    "document": {"base64": ("application/pdf",), "text": ("text/plain",), "url": None},
}
THINKING_TYPES = ("enabled", "disabled")
THINKING_BLOCKS = ("thinking", "redacted_thinking")
TOOL_CHOICES = ("auto", "any", "tool", "none")
WORD = re.compile(r"\s*\S+(?:\s+\Z)?")  # a word with the whitespace before it, and after it at the end
FLAKY = re.compile(r"fake-(overloaded-)?flaky-(\d+)")
HANG_S = 30.0
PING = b'event: ping\ndata: {"type": "ping"}\n\n'
FUTURE_EVENT = b'event: future_event\ndata: {"type":"future_event","detail":"clients must ignore this"}\n\n'
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
THINKING = ["Let me think", " about this."]
CITATION = {
    "type": "char_location",
    "cited_text": "The grass is green.",
    "document_index": 0,
    "document_title": "Example Document",
    "start_char_index": 0,
    "end_char_index": 19,
}
# status: (error type, message, extra headers)
STATUS_ERRORS: dict[int, tuple[str, str, dict[str, str]]] = {
    400: ("invalid_request_error", "fake-status-400: the fake was told to answer 400.", {}),
    401: ("authentication_error", "invalid x-api-key", {}),
    403: ("permission_error", "Your API key does not have permission to use the specified resource.", {}),
    404: ("not_found_error", "model: fake-status-404", {}),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes.", {}),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute. For details, "
        "refer to: https://docs.claude.com/en/api/rate-limits.",
        {"retry-after": "2", "anthropic-ratelimit-requests-remaining": "0"},
    ),
    500: ("api_error", "Internal server error", {}),
    529: ("overloaded_error", "Overloaded", {}),
}


@dataclass
class Block:
    """A content block as streamed: its ``content_block_start`` payload, then its deltas."""

    start: dict[str, Any]
    deltas: list[dict[str, Any]]


@dataclass
class Script:
    """What a reply streams: blocks, then its stop, an ``error`` event, or a cut connection (after the deltas)."""

    blocks: list[Block]
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    ending: Literal["finish", "error", "drop"] = "finish"


def signature(thinking: str) -> str:
    """The signature the fake gives a thinking block, and expects back with it."""
    return base64.b64encode(b"EqQBfake" + hashlib.sha256(thinking.encode()).digest()).decode()


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": REQUEST_ID}
    return JSONResponse(body, status_code=status, headers=(headers or {}) | {"request-id": REQUEST_ID})


def _event(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _tags(value: Any, tags: tuple[str, ...] | list[str]) -> str:
    listed = ", ".join(f"'{tag}'" for tag in tags)
    return f"Input tag '{value}' found using 'type' does not match any of the expected tags: {listed}"


def _one_of(values: tuple[str, ...]) -> str:
    quoted = [f"'{value}'" for value in values]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else quoted[0]


def _validate(body: dict[str, Any]) -> str | None:
    """The message of the first check the Messages API makes that ``body`` fails, else None."""
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    if not isinstance(body["model"], str):
        return "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            return "temperature: Input should be a valid number"
        if temperature > 1:
            return "temperature: Input should be less than or equal to 1"
        if temperature < 0:
            return "temperature: Input should be greater than or equal to 0"
    return (
        _validate_thinking(body.get("thinking"), max_tokens)
        or _validate_tools(body)
        or _validate_messages(body)
        or _validate_thinking_turns(body)
    )


def _validate_thinking(thinking: Any, max_tokens: int) -> str | None:
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in THINKING_TYPES:
        return f"thinking: {_tags(kind, THINKING_TYPES)}"
    if kind == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int):
        return "thinking.enabled.budget_tokens: Field required"
    if budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if budget >= max_tokens:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
        )
    return None


def _validate_tools(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for i, tool in enumerate(tools or []):
        for field in ("name", "input_schema"):
            if not isinstance(tool, dict) or field not in tool:
                return f"tools.{i}.custom.{field}: Field required"
    choice = body.get("tool_choice")
    if choice is None:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in TOOL_CHOICES:
        return f"tool_choice: {_tags(kind, TOOL_CHOICES)}"
    if kind in ("any", "tool") and _thinking_enabled(body):
        return "Thinking may not be enabled when tool_choice forces tool use."
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            return "tool_choice.tool.name: Field required"
        if choice["name"] not in {tool["name"] for tool in tools or []}:
            return f"tool_choice.name: Tool '{choice['name']}' not found in the provided `tools`."
    return None


def _validate_messages(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: List should have at least 1 item after validation, not 0"
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return (
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        if role not in ROLES:
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{i}.content: Field required"
        problem = _validate_content(message["content"], i, role == "assistant" and i == len(messages) - 1)
        if problem:
            return problem
    if messages[0]["role"] != "user":
        return 'messages: first message must use the "user" role'
    return _validate_tool_pairs(messages)


def _validate_content(content: Any, i: int, final_assistant: bool) -> str | None:
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        return f"messages.{i}.content: Input should be a valid list"
    if not blocks and not final_assistant:
        return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
    for j, block in enumerate(blocks):
        where = f"messages.{i}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            return f"{where}: {_tags(kind, BLOCK_TYPES)}"
        missing = next((field for field in BLOCK_FIELDS[kind] if field not in block), None)
        if missing:
            return f"{where}.{kind}.{missing}: Field required"
        if kind == "text" and not (block["text"] or final_assistant):
            return "messages: text content blocks must be non-empty"
        if kind in SOURCES:
            problem = _validate_source(block["source"], f"{where}.{kind}.source", SOURCES[kind])
            if problem:
                return problem
    return None


def _validate_source(source: Any, where: str, allowed: dict[str, tuple[str, ...] | None]) -> str | None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind not in allowed:
        return f"{where}: {_tags(kind, list(allowed))}"
    media_types = allowed[kind]
    if media_types is not None and source.get("media_type") not in media_types:
        return f"{where}.{kind}.media_type: Input should be {_one_of(media_types)}"
    field = "url" if media_types is None else "data"
    if not isinstance(source.get(field), str):
        return f"{where}.{kind}.{field}: Field required"
    return None


def _thinking_enabled(body: dict[str, Any]) -> bool:
    return (body.get("thinking") or {}).get("type") == "enabled"


def _validate_thinking_turns(body: dict[str, Any]) -> str | None:
    """Thinking blocks sent back must keep their signature; with thinking on, a tool-using last turn needs one."""
    messages = body["messages"]
    for i, message in enumerate(messages):
        for j, block in enumerate(message["content"] if isinstance(message["content"], list) else []):
            if block["type"] == "thinking" and block["signature"] != signature(block["thinking"]):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
    if not _thinking_enabled(body):
        return None
    i, last = next(((i, m) for i, m in reversed(list(enumerate(messages))) if m["role"] == "assistant"), (0, None))
    blocks = last["content"] if last and isinstance(last["content"], list) else []
    if not any(block["type"] == "tool_use" for block in blocks) or blocks[0]["type"] in THINKING_BLOCKS:
        return None
    return (
        f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{blocks[0]['type']}`. "
        "When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
        "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
        "previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
        "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    )


def _validate_tool_pairs(messages: list[dict[str, Any]]) -> str | None:
    """Each assistant ``tool_use`` needs its ``tool_result`` in the next (user) message, and nothing else may."""
    pending: list[str] = []
    for i, message in enumerate(messages):
        blocks = message["content"] if isinstance(message["content"], list) else []
        results = []
        for j, block in enumerate(blocks):
            if block["type"] != "tool_result":
                continue
            if message["role"] != "user" or block["tool_use_id"] not in pending:
                return (
                    f"messages.{i}.content.{j}: unexpected tool_use_id found in tool_result blocks: "
                    f"{block['tool_use_id']}. Each tool_result block must have a corresponding tool_use block in "
                    "the previous message."
                )
            results.append(block["tool_use_id"])
        unanswered = [tool_id for tool_id in pending if tool_id not in results]
        if unanswered:
            return _unanswered(i - 1, unanswered)
        is_assistant = message["role"] == "assistant"
        pending = [block["id"] for block in blocks if is_assistant and block["type"] == "tool_use"]
    return _unanswered(len(messages) - 1, pending) if pending else None


def _unanswered(i: int, tool_ids: list[str]) -> str:
    return (
        f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: "
        f"{', '.join(tool_ids)}. Each tool_use block must have a corresponding tool_result block in the next message."
    )


def _blocks_text(content: Any) -> str:
    """A string content, or the text blocks of a list joined by spaces."""
    if isinstance(content, str):
        return content
    return " ".join(block["text"] for block in content or [] if block.get("type") == "text")


def _echo_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message that has text; a message of only tool results has none."""
    texts = (_blocks_text(message["content"]) for message in reversed(messages) if message["role"] == "user")
    return next((text for text in texts if text), "")


def _text_block(pieces: list[str]) -> Block:
    return Block({"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in pieces])


def _tool_block(tool_id: str, name: str, fragments: list[str]) -> Block:
    deltas = [{"type": "input_json_delta", "partial_json": fragment} for fragment in ["", *fragments]]
    return Block({"type": "tool_use", "id": tool_id, "name": name, "input": {}}, deltas)


def _echo(text: str, body: dict[str, Any]) -> Script:
    found = [(text.index(stop), stop) for stop in body.get("stop_sequences") or [] if stop and stop in text]
    cut, stop_sequence = min(found, default=(len(text), None))
    pieces = WORD.findall(text[:cut])
    if len(pieces) > body["max_tokens"]:
        return Script([_text_block(pieces[: body["max_tokens"]])], "max_tokens")
    return Script([_text_block(pieces)], "stop_sequence" if stop_sequence else "end_turn", stop_sequence)


def _forced_tool(name: str, text: str, schema: dict[str, Any]) -> Script:
    """A call to ``name`` whose input is ``text`` as JSON, shaped to ``schema`` as a model would, in fragments."""
    value: Any = {}
    with contextlib.suppress(ValueError):
        value = json.loads(text)
    required = schema.get("required") or []
    if not isinstance(value, dict):
        value = {required[0]: value} if len(required) == 1 and len(schema.get("properties") or {}) == 1 else {}
    arguments = json.dumps(value)
    size = -(-len(arguments) // 3)
    fragments = [arguments[start : start + size] for start in range(0, len(arguments), size)]
    return Script([_tool_block("toolu_01A", name, fragments)], "tool_use")


def _thinking_block() -> Block:
    deltas: list[dict[str, Any]] = [{"type": "thinking_delta", "thinking": piece} for piece in THINKING]
    deltas.append({"type": "signature_delta", "signature": signature("".join(THINKING))})
    return Block({"type": "thinking", "thinking": "", "signature": ""}, deltas)


def _script(model: str, body: dict[str, Any]) -> Script:
    script = _scripted(model, body)
    last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    after_tools = isinstance(last_user, list) and any(b["type"] == "tool_result" for b in last_user)
    if script.ending == "finish" and (model == "fake-thinking" or (_thinking_enabled(body) and not after_tools)):
        script.blocks.insert(0, _thinking_block())
    return script


def _scripted(model: str, body: dict[str, Any]) -> Script:
    messages: list[dict[str, Any]] = body["messages"]
    if model == "fake-midstream-error":
        return Script([_text_block(["Hello", " there"])], ending="error")
    if model == "fake-drop":
        return Script([_text_block(["this", " gets", " cut"])], ending="drop")
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    result = next((b for b in last_user if b["type"] == "tool_result"), None) if isinstance(last_user, list) else None
    if result:
        return Script([_text_block(["Tool said: ", _blocks_text(result.get("content"))])])
    name = next((tool["name"] for tool in body.get("tools") or []), "get_weather")
    if model == "fake-tools":
        paris = _tool_block("toolu_01A", name, ['{"ci', 'ty": "Par', 'is"}'])
        return Script([_text_block(["Let me check."]), paris], "tool_use")
    if model == "fake-parallel-tools":
        paris = _tool_block("toolu_01A", name, ['{"ci', 'ty": "Par', 'is"}'])
        return Script([paris, _tool_block("toolu_01B", name, ['{"ci', 'ty": "Ro', 'me"}'])], "tool_use")
    if model == "fake-citations":
        deltas = [
            {"type": "text_delta", "text": "According to the document, "},
            {"type": "citations_delta", "citation": CITATION},
            {"type": "text_delta", "text": "the grass"},
            {"type": "text_delta", "text": " is green."},
        ]
        return Script([Block({"type": "text", "text": "", "citations": []}, deltas)])
    text = _echo_text(messages)
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        schema = next(tool["input_schema"] for tool in body["tools"] if tool["name"] == choice["name"])
        return _forced_tool(choice["name"], text, schema)
    return _echo(text, body)


def _fold(block: Block) -> dict[str, Any]:
    """A streamed block as a whole message's content block."""
    folded = dict(block.start)
    partial_json = ""
    for delta in block.deltas:
        if delta["type"] == "text_delta":
            folded["text"] += delta["text"]
        elif delta["type"] == "thinking_delta":
            folded["thinking"] += delta["thinking"]
        elif delta["type"] == "signature_delta":
            folded["signature"] = delta["signature"]
        elif delta["type"] == "citations_delta":
            folded["citations"] = [*folded["citations"], delta["citation"]]
        else:
            partial_json += delta["partial_json"]
    if folded["type"] == "tool_use":
        folded["input"] = orjson.loads(partial_json or "{}")
    return folded


def _message(model: str, content: list[dict[str, Any]], script: Script | None, output_tokens: int) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": script.stop_reason if script else None,
        "stop_sequence": script.stop_sequence if script else None,
        "usage": USAGE | {"output_tokens": output_tokens},
    }


def _output_tokens(script: Script) -> int:
    return max(1, sum(len(block.deltas) for block in script.blocks))


class FakeAnthropic:
    def __init__(self, api_key: str = "sk-ant-test") -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.flaky: dict[tuple[str, str], int] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    def reset(self) -> None:
        """Forgets the recorded requests and the flaky scripts' counts."""
        self.requests.clear()
        self.flaky.clear()

    def _refused(self, request: Request) -> Response | None:
        """The 401 or 400 of a request without the right key or any ``anthropic-version``, else None.

        The key is the ``x-api-key`` header or an ``Authorization: Bearer`` one: anthropic-sdk-python 2.x sends its
        ``api_key`` as a bearer token.
        """
        bearer = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else None)
        if key is None:
            return _error(401, "authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    async def models(self, request: Request) -> Response:
        return self._refused(request) or JSONResponse(MODELS, headers={"request-id": REQUEST_ID})

    async def messages(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        client = request.client.port if request.client else None
        self.requests.append({"body": body, "headers": dict(request.headers), "port": client})
        refused = self._refused(request)
        if refused:
            return refused
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "There was an error parsing the body of your request as JSON.")
        problem = _validate(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        model: str = body["model"]
        failure = self._failure(model, body)
        if failure:
            return failure
        if model == "fake-hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_disconnected(request), HANG_S)
        script = _script(model, body)
        headers = {"request-id": REQUEST_ID}
        if body.get("stream"):
            return StreamingResponse(_stream(model, script), media_type="text/event-stream", headers=headers)
        if script.ending == "error":
            return _error(529, "overloaded_error", "Overloaded")
        if script.ending == "drop":
            return StreamingResponse(_cut_json(), media_type="application/json", headers=headers)
        content = [_fold(block) for block in script.blocks]
        return JSONResponse(_message(model, content, script, _output_tokens(script)), headers=headers)

    def _failure(self, model: str, body: dict[str, Any]) -> Response | None:
        """The error response of the scripts that fail before any reply, else None."""
        status = model.removeprefix("fake-status-")
        if status.isdigit() and int(status) in STATUS_ERRORS:
            type_, message, headers = STATUS_ERRORS[int(status)]
            return _error(int(status), type_, message, headers)
        flaky = FLAKY.fullmatch(model)
        if flaky:
            key = (model, _echo_text(body["messages"]))
            failed = self.flaky.get(key, 0)
            if failed < int(flaky[2]):
                self.flaky[key] = failed + 1
                headers = {"retry-after": "0"}
                if flaky[1]:
                    return _error(529, "overloaded_error", "Overloaded", headers)
                return _error(429, "rate_limit_error", STATUS_ERRORS[429][1], headers)
        return None


async def _stream(model: str, script: Script) -> AsyncIterator[bytes]:
    yield _event({"type": "message_start", "message": _message(model, [], None, 1)})
    yield FUTURE_EVENT
    for index, block in enumerate(script.blocks):
        yield _event({"type": "content_block_start", "index": index, "content_block": block.start})
        if index == 0:
            yield PING
        for delta in block.deltas:
            await asyncio.sleep(0)
            yield _event({"type": "content_block_delta", "index": index, "delta": delta})
        if script.ending == "error":
            yield _event(OVERLOADED)
            return
        if script.ending == "drop":
            raise Dropped("fake-drop cuts the connection")
        yield _event({"type": "content_block_stop", "index": index})
    yield _event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": script.stop_reason, "stop_sequence": script.stop_sequence},
            "usage": {"output_tokens": _output_tokens(script)},
        }
    )
    yield _event({"type": "message_stop"})


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _cut_json() -> AsyncIterator[bytes]:
    yield b'{"id": "' + MESSAGE_ID.encode() + b'", "type": "message", "role": "assistant", "content": ['
    raise Dropped("fake-drop cuts the connection")
