"""OpenAI-shaped requests to Anthropic Messages, and Anthropic's stream back to Relay events.

The mapping follows WIRE.md ("Mapping between them"): system messages move to
the top-level ``system``, tool calls become ``tool_use`` blocks and tool
results ``tool_result`` blocks in a user turn, consecutive same-role turns
merge, and ``max_tokens`` is always set. ``response_format`` becomes a forced
tool whose input is the JSON reply, streamed back as text, as LiteLLM does; a
tool's input must be an object, so any other root schema is wrapped as
``{"value": <schema>}`` and unwrapped on the way back. An assistant message's
``thinking_blocks`` go back as ``thinking`` blocks, signature intact: with
thinking on, Anthropic refuses a tool-use turn without them.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from relay.errors import InvalidRequest, RelayError, UnsupportedFeature, error_for_status
from relay.events import finish, reasoning_delta, text_delta
from relay.providers.media import parse_data_uri
from relay.providers.structured import output_schema
from relay.request import ChatRequest

# The ingress direction lives in ``anthropic_ingress``; its names stay importable from here.
from relay.wire.anthropic_ingress import (
    STOP_FROM_FINISH,
    AnthropicEncoder,
    anthropic_error_body,
    anthropic_error_body_for,
    anthropic_message,
    from_anthropic_messages,
    from_anthropic_params,
    text_of,
)

__all__ = [
    "to_anthropic_request",
    "AnthropicStream",
    "FINISH_FROM_ANTHROPIC",
    "STOP_FROM_FINISH",
    "error_from_anthropic",
    "STRUCTURED_TOOL",
    "structured_input_schema",
    "from_anthropic_messages",
    "from_anthropic_params",
    "AnthropicEncoder",
    "anthropic_message",
    "anthropic_error_body",
    "anthropic_error_body_for",
]

STRUCTURED_TOOL = "json_output"
FINISH_FROM_ANTHROPIC = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
_EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def error_from_anthropic(error: dict[str, Any], prefix: str, status: int | None = None) -> RelayError:
    """Classify by ``error.type``: a mid-stream error arrives under HTTP 200 (anthropic-sdk-python#1258)."""
    kind = error.get("type", "api_error")
    message = f"{prefix}upstream {kind}: {error.get('message', '')}".rstrip(": ")
    return error_for_status(status if status and status != 200 else _STATUS_OF_TYPE.get(kind, 500), message)


def _block(part: dict[str, Any], param: str) -> dict[str, Any]:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": part["text"]} | (
            {"cache_control": part["cache_control"]} if "cache_control" in part else {}
        )
    if kind == "image_url":
        url = part["image_url"]["url"]
        if url.startswith("data:"):
            inline = parse_data_uri(url, f"{param}.image_url.url")
            if inline.media_type not in IMAGE_TYPES:
                raise UnsupportedFeature(
                    f"Anthropic accepts {', '.join(IMAGE_TYPES)} images, not {inline.media_type}", param=param
                )
            return {"type": "image", "source": {"type": "base64", "media_type": inline.media_type, "data": inline.data}}
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind == "file":
        spec = part["file"]
        if "file_data" not in spec:
            raise UnsupportedFeature("Anthropic cannot read OpenAI file ids; send the file's bytes", param=param)
        inline = parse_data_uri(spec["file_data"], f"{param}.file.file_data")
        block: dict[str, Any]
        if inline.media_type == "application/pdf":
            block = {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": inline.data},
            }
        elif inline.media_type.startswith("text/"):
            text = base64.b64decode(inline.data).decode("utf-8", errors="replace")
            block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        else:
            raise UnsupportedFeature(f"Anthropic documents are PDF or text, not {inline.media_type}", param=param)
        if spec.get("filename"):
            block["title"] = spec["filename"]
        if part.get("citations"):
            block["citations"] = {"enabled": True}
        return block
    raise UnsupportedFeature(f"Anthropic does not accept {kind} content", param=f"{param}.type")


def _content_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [
        _block(part, f"{param}[{j}]") for j, part in enumerate(content) if part.get("type") != "text" or part["text"]
    ]


def _tool_use(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "Tool call arguments must be a JSON object string", param=f"{param}.function.arguments"
        ) from None
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The signed thinking blocks of an assistant message, in the shape Anthropic accepts back."""
    out = []
    for block in message.get("thinking_blocks") or ():
        if block.get("type") == "thinking" and block.get("signature"):
            out.append({"type": "thinking", "thinking": block.get("thinking", ""), "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and block.get("data"):
            out.append({"type": "redacted_thinking", "data": block["data"]})
    return out


def _messages(
    messages: list[dict[str, Any]], thinking: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user/assistant turns); ``thinking``: replay the assistant's thinking blocks."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id") or "",
                    "content": text_of(message.get("content")),
                }
                | ({"is_error": True} if message.get("is_error") else {})
            ]
            role = "user"
        elif role == "assistant":
            blocks = _thinking_blocks(message) if thinking else []
            blocks += _content_blocks(message.get("content"), f"{param}.content")
            blocks += [
                _tool_use(call, f"{param}.tool_calls[{j}]") for j, call in enumerate(message.get("tool_calls") or ())
            ]
        else:
            blocks = _content_blocks(message.get("content"), f"{param}.content")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            merged = turns[-1]["content"] + blocks
            # tool_result blocks must lead their user turn
            merged.sort(key=lambda block: block["type"] != "tool_result")
            turns[-1]["content"] = merged
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    return system, turns


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise InvalidRequest("tool_choice must be none, auto, required or a named function", param="tool_choice")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def structured_input_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the structured tool's ``input_schema``, whether the reply is wrapped under ``value``).

    A root other than an object is wrapped; its ``$defs`` move to the new root so ``#/$defs/…`` refs still resolve.
    """
    if schema.get("type") == "object":
        return schema, False
    defs = {key: schema[key] for key in ("$defs", "definitions") if key in schema}
    inner = {key: value for key, value in schema.items() if key not in defs}
    return {"type": "object", "properties": {"value": inner}, "required": ["value"], **defs}, True


def _thinking(params: dict[str, Any], structured: bool) -> dict[str, Any] | None:
    """The ``thinking`` to send. Structured output forces a tool, which Anthropic refuses with thinking on."""
    thinking = params.get("thinking")
    if structured and (thinking or {}).get("type") == "enabled":
        raise UnsupportedFeature(
            "Anthropic cannot think while response_format forces its answer tool; drop thinking or response_format",
            param="thinking",
        )
    if thinking is None and params.get("reasoning_effort") in _EFFORT_BUDGET and not structured:
        thinking = {"type": "enabled", "budget_tokens": _EFFORT_BUDGET[params["reasoning_effort"]]}
    return thinking or None


def to_anthropic_request(request: ChatRequest, model: str, default_max_tokens: int) -> dict[str, Any]:
    """The keyword arguments of ``client.messages.create``."""
    params = request.params
    schema = output_schema(params.get("response_format"))
    thinking = _thinking(params, schema is not None)
    system, turns = _messages(request.messages, bool(thinking) and thinking.get("type") == "enabled")
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": params.get("max_tokens") or default_max_tokens,
    }
    if system:
        body["system"] = system
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if params.get(ours) is not None:
            body[theirs] = params[ours]
    stop = params.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    tools = [
        {
            "name": tool["function"]["name"],
            "description": tool["function"].get("description", ""),
            "input_schema": tool["function"].get("parameters") or {"type": "object", "properties": {}},
        }
        for tool in params.get("tools") or ()
    ]
    choice = _tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
    if schema is not None:
        spec = params["response_format"].get("json_schema") or {}
        input_schema, wrapped = structured_input_schema(schema)
        tools.append(
            {
                "name": STRUCTURED_TOOL,
                "description": spec.get("description")
                or ("Respond with the JSON value as 'value'." if wrapped else "Respond with the JSON object."),
                "input_schema": input_schema,
            }
        )
        choice = {"type": "tool", "name": STRUCTURED_TOOL}
    if tools:
        body["tools"] = tools
    if choice is not None and (tools or choice["type"] == "none"):
        body["tool_choice"] = choice
    if thinking:
        body["thinking"] = thinking
        if thinking.get("type") == "enabled" and body["max_tokens"] <= thinking.get("budget_tokens", 0):
            body["max_tokens"] = thinking["budget_tokens"] + default_max_tokens
        body.pop("temperature", None)  # Anthropic refuses temperature with thinking
    return body


class AnthropicStream:
    """Folds Anthropic SSE events into Relay events; one instance per response."""

    def __init__(self, structured: bool = False, prefix: str = "", wrapped: bool = False) -> None:
        self.structured = structured
        self.prefix = prefix
        self.wrapped = wrapped  # the structured reply arrives as {"value": …} (see structured_input_schema)
        self.blocks: dict[int, dict[str, Any]] = {}
        self.tool_count = 0
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None

    def feed(self, kind: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data["index"], data["content_block"])
        if kind == "content_block_stop":
            return self._stop(data["index"])
        if kind == "message_start":
            self._usage(data["message"].get("usage") or {})
        elif kind == "message_delta":
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage(data.get("usage") or {})
        elif kind == "message_stop":
            return [self._usage_event(), finish(self._finish_reason())]
        elif kind == "error":
            raise error_from_anthropic(data.get("error") or {}, self.prefix)
        return []  # ping, and event types newer than this code

    def _start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use" and self.structured and block.get("name") == STRUCTURED_TOOL:
            self.blocks[index] = {"kind": "json", "parts": []}
            return []
        if kind == "tool_use":
            tool_index = self.tool_count
            self.tool_count += 1
            self.blocks[index] = {
                "kind": "tool",
                "index": tool_index,
                "id": block["id"],
                "name": block["name"],
                "args": [],
            }
            return [
                {"type": "tool-call-start", "index": tool_index, "tool_call_id": block["id"], "name": block["name"]}
            ]
        self.blocks[index] = {"kind": kind}
        if kind == "text" and block.get("text"):
            return [text_delta(block["text"])]
        return []

    def _delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data["delta"]
        kind = delta.get("type")
        block = self.blocks.get(data["index"], {})
        if kind == "text_delta":
            return [text_delta(delta["text"])] if delta["text"] else []
        if kind == "thinking_delta":
            return [reasoning_delta(delta["thinking"])] if delta["thinking"] else []
        if kind == "signature_delta":
            return [{"type": "reasoning-delta", "content": "", "signature": delta["signature"]}]
        if kind == "input_json_delta":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            if block.get("kind") == "json":
                if self.wrapped:  # unwrapped whole at the block's end: fragments of {"value": …} are not the reply
                    block["parts"].append(fragment)
                    return []
                return [text_delta(fragment)]
            block["args"].append(fragment)
            return [{"type": "tool-call-delta", "index": block["index"], "arguments_delta": fragment}]
        if kind == "citations_delta":
            return [_citation(delta["citation"])]
        return []

    def _stop(self, index: int) -> list[dict[str, Any]]:
        block = self.blocks.get(index, {})
        if block.get("kind") == "json" and self.wrapped:
            return [text_delta(_unwrapped("".join(block["parts"])))]
        if block.get("kind") != "tool":
            return []
        return [
            {
                "type": "tool-call-end",
                "index": block["index"],
                "tool_call_id": block["id"],
                "name": block["name"],
                "arguments": "".join(block["args"]) or "{}",
            }
        ]

    def _usage(self, usage: dict[str, Any]) -> None:
        # message_delta's counts are cumulative: later values replace earlier ones
        for theirs, ours in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_input_tokens", "cache_read_tokens"),
            ("cache_creation_input_tokens", "cache_write_tokens"),
        ):
            if usage.get(theirs) is not None:
                self.usage[ours] = usage[theirs]

    def _usage_event(self) -> dict[str, Any]:
        return {
            "type": "usage",
            **{
                key: self.usage.get(key, 0)
                for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
            },
        }

    def _finish_reason(self) -> str:
        if self.structured and self.stop_reason == "tool_use" and self.tool_count == 0:
            return "stop"
        return FINISH_FROM_ANTHROPIC.get(self.stop_reason or "end_turn", "stop")


def _unwrapped(raw: str) -> str:
    """The JSON under ``value``; what arrived, unchanged, when it is not such an object (validation says why)."""
    try:
        return orjson.dumps(orjson.loads(raw)["value"]).decode()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw


def _citation(citation: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "citation", "cited_text": citation.get("cited_text")}
    if citation.get("url"):
        event["url"] = citation["url"]
    title = citation.get("document_title") or citation.get("title")
    if title:
        event["title"] = title
    if citation.get("document_index") is not None:
        event["document_index"] = citation["document_index"]
    for theirs in ("start_char_index", "start_page_number", "start_block_index"):
        if citation.get(theirs) is not None:
            event["start_index"] = citation[theirs]
            event["end_index"] = citation.get(theirs.replace("start", "end"))
            break
    return event
