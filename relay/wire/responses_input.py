"""The Responses API request side: the body, its checks, and its items as Relay's chat-shaped messages.

Clients send looser shapes than the param types promise (RESPONSES.md §2): a
message without ``type``, an assistant replay without ``status`` or
``annotations``, an ``item_reference`` without ``type``. All are accepted;
unknown top-level fields are ignored, never a 400 (§1). Every 400 names its
field in ``param`` (``input[2].call_id``, ``tools[1].type``, ``metadata``).

Decisions:

- ``encrypted_content`` (what ``relay.wire.responses`` emits): a string
  starting ``relay.anthropic.`` is an Anthropic thinking signature, replayed as
  ``{"type": "thinking", "thinking": <summary text>, "signature": …}``; any
  other string came verbatim from an OpenAI Responses upstream, replayed as
  ``{"type": "reasoning", "id", "summary", "encrypted_content"}``. Either goes
  in ``thinking_blocks`` of the next assistant message (relay.reply). A
  reasoning item without ``encrypted_content`` is looked up by id
  (``resolve``, the stored item may have it) and otherwise dropped from the
  model context: its summary is not something the model can take back, and
  LangChain replays such items on every turn (§6), so refusing them would
  break it.
- ``tool_choice: {type: "allowed_tools", mode, tools}`` has no chat form: the
  offered ``tools`` are narrowed to the allowed ones and ``tool_choice`` becomes
  ``mode``. The model can call nothing else, which is what the choice means.
- Consecutive ``function_call`` items and the assistant text before them merge
  into ONE assistant message with ``tool_calls``: chat providers expect a
  turn's calls together, and Anthropic refuses split tool_use turns.
- ``input_file`` with ``file_url`` becomes a file part with ``url``; relay.providers.media
  then refuses http(s) file URLs as it does on the chat route.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.errors import InvalidRequest, NotFound
from relay.wire.responses_object import ANTHROPIC_PREFIX

__all__ = [
    "ResponsesBody",
    "parse_body",
    "check_body",
    "conversation_id",
    "chat_tools",
    "chat_params",
    "input_messages",
    "input_items",
    "call_ids",
    "item_not_found",
    "HOSTED_TOOLS",
]

MAX_TOKENS = 1_000_000
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "computer",
        "computer_use",
        "computer_use_preview",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "custom",
    }
)
_CONVERSATION_ID = re.compile(r"^conv_[A-Za-z0-9_-]{1,128}$")
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


class ResponsesBody(BaseModel):
    """``POST /v1/responses`` (§1 "Create fields"). Unknown fields are kept in ``model_extra`` and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_tool_calls: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncation: Literal["auto", "disabled"] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = True
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = False
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    include: list[str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    # Relay's own server-side tools this turn may run, by name, as on the chat routes.
    relay_tools: list[str] | None = Field(default=None, max_length=64)
    provider_options: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[str] = Field(default_factory=list, max_length=8)

    @property
    def include_encrypted(self) -> bool:
        return "reasoning.encrypted_content" in (self.include or ())


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "dict[str,any]", "list[dict[str,any]]", "int", "bool") and "[" not in part:
            out += f".{part}" if out else part
    return out


def parse_body(data: Any) -> ResponsesBody:
    """The validated body, every check of ``check_body`` passed; errors are ``InvalidRequest`` naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    try:
        body = ResponsesBody.model_validate(data)
    except ValidationError as exc:
        first = max(exc.errors(), key=lambda error: len(error["loc"]))
        param = _loc(first["loc"])
        raise InvalidRequest(f"Invalid '{param}': {first['msg']}", param=param or None) from None
    check_body(body)
    return body


def check_body(body: ResponsesBody) -> None:
    """The cross-field rules of §1 and §4, each a 400 naming its field."""
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    if body.background and body.store is False:
        raise InvalidRequest(
            "Background responses must be stored: 'background' requires 'store': true", param="background"
        )
    if body.conversation is not None and body.previous_response_id is not None:
        raise InvalidRequest(
            "Mutually exclusive parameters. Ensure you are only providing one of: 'previous_response_id' or "
            "'conversation'.",
            code="mutually_exclusive_parameters",
        )
    conversation_id(body)
    metadata = body.metadata or {}
    if len(metadata) > 16:
        raise InvalidRequest("'metadata' holds at most 16 key-value pairs", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise InvalidRequest(
                f"metadata {key[:64]!r}: keys are at most 64 characters, values strings of at most 512",
                param="metadata",
            )
    chat_tools(body.tools)
    _response_format(body.text)


def conversation_id(body: ResponsesBody) -> str | None:
    """``conversation`` as an id (it may be ``"conv_…"`` or ``{id}``), checked as §4 words it."""
    value = body.conversation
    if value is None:
        return None
    raw = value.get("id") if isinstance(value, dict) else value
    if not isinstance(raw, str) or not _CONVERSATION_ID.match(raw):
        raise InvalidRequest(
            f"Invalid 'conversation': '{raw}'. Expected an ID that begins with 'conv_'.", param="conversation"
        )
    return raw


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Flat function tools (§1) in the nested chat shape; hosted tools Relay does not run are a 400."""
    out = []
    for i, tool in enumerate(tools or ()):
        kind = tool.get("type")
        if kind != "function":
            name = kind if isinstance(kind, str) else None
            hosted = f"the hosted tool '{name}'" if name in HOSTED_TOOLS else f"tool type {name!r}"
            raise InvalidRequest(
                f"Relay does not run {hosted}; declare a function tool, or name Relay's own tools in 'relay_tools'",
                param=f"tools[{i}].type",
            )
        spec = tool["function"] if isinstance(tool.get("function"), dict) else tool  # tolerate the chat shape
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise InvalidRequest("A function tool needs a 'name'", param=f"tools[{i}].name")
        function = {"name": spec["name"], "parameters": spec.get("parameters") or {"type": "object", "properties": {}}}
        if spec.get("description") is not None:
            function["description"] = spec["description"]
        if spec.get("strict") is not None:
            function["strict"] = spec["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """(chat ``tool_choice``, the tools offered); ``allowed_tools`` narrows the tools (module docstring)."""
    if choice is None or choice in ("none", "auto", "required"):
        return choice, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, tools
    if kind == "allowed_tools" and choice.get("mode", "auto") in ("auto", "required"):
        allowed = {tool.get("name") for tool in choice.get("tools") or () if tool.get("type") == "function"}
        return choice.get("mode", "auto"), [tool for tool in tools if tool["function"]["name"] in allowed]
    raise InvalidRequest(
        "tool_choice must be none, auto, required, {type: function, name} or {type: allowed_tools} of functions",
        param="tool_choice",
    )


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """``text.format`` (schema directly under ``format``, §1) as chat ``response_format`` (schema under json_schema)."""
    fmt = (text or {}).get("format")
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") != "json_schema":
        raise InvalidRequest("text.format.type must be text, json_object or json_schema", param="text.format.type")
    for key in ("name", "schema"):
        if not fmt.get(key):
            raise InvalidRequest(f"A json_schema format needs '{key}'", param=f"text.format.{key}")
    spec = {"name": fmt["name"], "schema": fmt["schema"]}
    spec |= {key: fmt[key] for key in ("strict", "description") if fmt.get(key) is not None}
    return {"type": "json_schema", "json_schema": spec}


def chat_params(body: ResponsesBody) -> dict[str, Any]:
    """The ``ChatRequest.params`` this body asks for, in chat-completions terms (as relay.http.schemas builds them).

    ``prompt_cache_key``, ``max_tool_calls``, ``top_logprobs``, ``text.verbosity`` and ``reasoning.summary`` have
    no place on the chat path and are left out.
    """
    choice, tools = _tool_choice(body.tool_choice, chat_tools(body.tools))
    params: dict[str, Any] = {
        "tools": tools or None,
        "tool_choice": choice if tools or choice == "none" else None,
        "parallel_tool_calls": body.parallel_tool_calls if tools else None,
        "response_format": _response_format(body.text),
        "reasoning_effort": (body.reasoning or {}).get("effort"),
        "max_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "user": body.safety_identifier or body.user,
    }
    return {key: value for key, value in params.items() if value is not None}


def item_not_found(item_id: str, param: str) -> NotFound:
    return NotFound(
        f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
        "Try again with `store` set to true, or remove this item from your input.",
        param=param,
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or part.get("refusal") or "" for part in content or () if isinstance(part, dict))


def _part(part: Any, param: str) -> dict[str, Any]:
    """One input content part as the part relay.providers.media normalizes (text, image_url, file)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            raise InvalidRequest("A text part needs 'text'", param=f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind in ("input_image", "input_file") and part.get("file_id"):
        raise InvalidRequest("Relay has no Files API: send the bytes as a data URI or a URL", param=f"{param}.file_id")
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
            raise InvalidRequest("input_image needs an http(s) or data: image_url", param=f"{param}.image_url")
        detail = part.get("detail")
        return {"type": "image_url", "image_url": {"url": url} | ({"detail": detail} if detail else {})}
    if kind == "input_file":
        if part.get("file_data"):
            file = {"file_data": part["file_data"]} | ({"filename": part["filename"]} if part.get("filename") else {})
            return {"type": "file", "file": file}
        if part.get("file_url"):
            return {"type": "file", "file": {"url": part["file_url"]}}
        raise InvalidRequest("input_file needs file_data (a data URI) or file_url", param=param)
    raise InvalidRequest(f"Unknown content part type {kind!r}", param=f"{param}.type")


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts", param=param)
    return [_part(part, f"{param}[{j}]") for j, part in enumerate(content)]


def _thinking_block(item: dict[str, Any]) -> dict[str, Any] | None:
    encrypted = item.get("encrypted_content")
    if not isinstance(encrypted, str) or not encrypted:
        return None
    summary = [part for part in item.get("summary") or () if isinstance(part, dict)]
    if encrypted.startswith(ANTHROPIC_PREFIX):
        thinking = "".join(part.get("text", "") for part in summary)
        return {"type": "thinking", "thinking": thinking, "signature": encrypted.removeprefix(ANTHROPIC_PREFIX)}
    return {"type": "reasoning", "id": item.get("id"), "summary": summary, "encrypted_content": encrypted}


def call_ids(messages: list[dict[str, Any]]) -> set[str]:
    """The tool-call ids of chat-shaped messages: what a chain's earlier turns let a function_call_output answer."""
    return {call["id"] for message in messages for call in message.get("tool_calls") or () if call.get("id")}


def input_messages(
    input: str | list[dict[str, Any]] | None,
    *,
    resolve: Callable[[str], dict[str, Any] | None],
    known_call_ids: Collection[str] = (),
    instructions: str | None = None,
) -> list[dict[str, Any]]:
    """Responses input items (§2) as Relay's chat-shaped messages.

    ``resolve`` returns a stored item by id (for ``item_reference`` and reasoning replayed without its
    ``encrypted_content``); ``known_call_ids`` are the calls of the earlier context (``call_ids``), which a
    ``function_call_output`` may answer besides the calls of this input. ``instructions`` lead as a system
    message; they are not inherited through ``previous_response_id`` (§4), which is the caller's concern.
    """
    out: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    if input is None:
        return out
    if isinstance(input, str):
        return [*out, {"role": "user", "content": input}]
    seen = set(known_call_ids)
    thinking: list[dict[str, Any]] = []  # reasoning waiting for the assistant turn it preceded
    merge = False  # out[-1] is an assistant turn that a following function_call joins
    for i, raw in enumerate(input):
        param = f"input[{i}]"
        item = _resolved(raw, param, resolve)
        kind = item.get("type") or "message"
        if kind == "reasoning":
            block = _thinking_block(item)
            if block is None and isinstance(item.get("id"), str):
                block = _thinking_block(resolve(item["id"]) or {})
            if block is not None:
                thinking.append(block)
        elif kind == "function_call":
            for key in ("call_id", "name"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise InvalidRequest(f"A function_call needs '{key}'", param=f"{param}.{key}")
            arguments = item.get("arguments", "")
            arguments = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": arguments},
            }
            seen.add(item["call_id"])
            if not merge:
                out.append({"role": "assistant", "content": None})
            out[-1].setdefault("tool_calls", []).append(call)
            merge = True
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in seen:
                raise InvalidRequest(
                    f"No tool call found for function call output with call_id {call_id!r}", param=f"{param}.call_id"
                )
            output = item.get("output", "")
            content = output if isinstance(output, str) else _content(output, f"{param}.output")
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
            merge = False
        elif kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(f"Unknown role {role!r}", param=f"{param}.role")
            if role == "assistant":
                out.append({"role": "assistant", "content": _text_of(item.get("content"))})
            else:
                out.append(
                    {
                        "role": "user" if role == "user" else "system",
                        "content": _content(item.get("content"), f"{param}.content"),
                    }
                )
            merge = role == "assistant"
        else:
            raise InvalidRequest(f"Relay does not accept {kind!r} input items", param=f"{param}.type")
        if thinking and merge:
            out[-1].setdefault("thinking_blocks", []).extend(thinking)
            thinking = []
    return out


def _resolved(raw: Any, param: str, resolve: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """The item itself; an ``item_reference`` (``type`` optional, §2) replaced by the stored item it names."""
    if not isinstance(raw, dict):
        raise InvalidRequest("Each input item must be an object", param=param)
    kind = raw.get("type")
    if kind == "item_reference" or (kind is None and "role" not in raw and isinstance(raw.get("id"), str)):
        if not isinstance(raw.get("id"), str):
            raise InvalidRequest("An item_reference needs an 'id'", param=f"{param}.id")
        item = resolve(raw["id"])
        if item is None or item.get("type") == "item_reference":
            raise item_not_found(raw["id"], f"{param}.id")
        return item
    return raw


def input_items(input: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The input as stored and listed by ``GET /v1/responses/{id}/input_items``: each item typed, with an id.

    A client-given id is kept; messages get ``msg_…`` ids and ``status: "completed"`` (§4 "Input items list").
    """
    if input is None:
        return []
    raw_items = [{"role": "user", "content": input}] if isinstance(input, str) else input
    out = []
    for raw in raw_items:
        item = dict(raw)
        kind = item.setdefault("type", "message" if "role" in item else "item_reference")
        if kind != "item_reference":
            item.setdefault("id", f"{_ITEM_PREFIX.get(kind, 'item')}_{uuid.uuid4().hex}")
            item.setdefault("status", "completed")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            extra = {"annotations": []} if part == "output_text" else {}
            item["content"] = [{"type": part, "text": item["content"]} | extra]
        out.append(item)
    return out
