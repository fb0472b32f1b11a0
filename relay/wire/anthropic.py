"""OpenAI-shaped requests to Anthropic Messages, and Anthropic's stream back to Relay events.

The mapping follows WIRE.md ("Mapping between them"): system messages move to
the top-level ``system``, tool calls become ``tool_use`` blocks and tool
results ``tool_result`` blocks in a user turn, consecutive same-role turns
merge, and ``max_tokens`` is always set. ``response_format`` becomes a forced
tool whose input is the JSON reply, streamed back as text, as LiteLLM does.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson

from ..errors import InvalidRequest, RelayError, UnsupportedFeature, error_for_status
from ..events import finish, reasoning_delta, text_delta
from ..media import parse_data_uri
from ..request import ChatRequest
from ..structured import output_schema

__all__ = [
    "to_anthropic_request",
    "AnthropicStream",
    "FINISH_FROM_ANTHROPIC",
    "STOP_FROM_FINISH",
    "error_from_anthropic",
    "STRUCTURED_TOOL",
    "from_anthropic_messages",
    "from_anthropic_params",
    "AnthropicEncoder",
    "anthropic_message",
    "anthropic_error_body",
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
STOP_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
    "cancelled": "end_turn",
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


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if part.get("type") == "text")


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


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user/assistant turns)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        param = f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id") or "",
                    "content": _text_of(message.get("content")),
                }
                | ({"is_error": True} if message.get("is_error") else {})
            ]
            role = "user"
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), f"{param}.content")
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


def to_anthropic_request(request: ChatRequest, model: str, default_max_tokens: int) -> dict[str, Any]:
    """The keyword arguments of ``client.messages.create``."""
    params = request.params
    system, turns = _messages(request.messages)
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
    schema = output_schema(params.get("response_format"))
    if schema is not None:
        spec = params["response_format"].get("json_schema") or {}
        tools.append(
            {
                "name": STRUCTURED_TOOL,
                "description": spec.get("description") or "Respond with the requested JSON object.",
                "input_schema": schema if schema.get("type") == "object" else {"type": "object", "properties": {}},
            }
        )
        choice = {"type": "tool", "name": STRUCTURED_TOOL}
    if tools:
        body["tools"] = tools
    if choice is not None and (tools or choice["type"] == "none"):
        body["tool_choice"] = choice
    thinking = params.get("thinking")
    if thinking is None and params.get("reasoning_effort") in _EFFORT_BUDGET and schema is None:
        thinking = {"type": "enabled", "budget_tokens": _EFFORT_BUDGET[params["reasoning_effort"]]}
    if thinking:
        body["thinking"] = thinking
        if thinking.get("type") == "enabled" and body["max_tokens"] <= thinking.get("budget_tokens", 0):
            body["max_tokens"] = thinking["budget_tokens"] + default_max_tokens
        body.pop("temperature", None)  # Anthropic refuses temperature with thinking
    return body


class AnthropicStream:
    """Folds Anthropic SSE events into Relay events; one instance per response."""

    def __init__(self, structured: bool = False, prefix: str = "") -> None:
        self.structured = structured
        self.prefix = prefix
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
            self.blocks[index] = {"kind": "json"}
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
        if kind == "input_json_delta":
            fragment = delta.get("partial_json") or ""
            if not fragment:
                return []
            if block.get("kind") == "json":
                return [text_delta(fragment)]
            block["args"].append(fragment)
            return [{"type": "tool-call-delta", "index": block["index"], "arguments_delta": fragment}]
        if kind == "citations_delta":
            return [_citation(delta["citation"])]
        return []  # signature_delta: thinking signatures are not replayed yet

    def _stop(self, index: int) -> list[dict[str, Any]]:
        block = self.blocks.get(index, {})
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


# The other direction: Anthropic-shaped requests in, Anthropic-shaped replies out (``POST /v1/messages``).


def _openai_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    source = block.get("source") or {}
    if kind == "image":
        if source.get("type") == "url":
            return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
        return {
            "type": "image_url",
            "image_url": {"url": f"data:{source.get('media_type')};base64,{source.get('data')}"},
        }
    if kind == "document":
        if source.get("type") == "text":
            data = base64.b64encode(str(source.get("data", "")).encode()).decode()
            uri = f"data:text/plain;base64,{data}"
        elif source.get("type") == "base64":
            uri = f"data:{source.get('media_type', 'application/pdf')};base64,{source.get('data')}"
        else:
            raise UnsupportedFeature("Documents by URL are not supported; send their bytes", param=param)
        return {
            "type": "file",
            "file": {"file_data": uri} | ({"filename": block["title"]} if block.get("title") else {}),
        }
    raise InvalidRequest(f"Unknown content block type {kind!r}", param=f"{param}.type")


def _result_text(content: Any) -> str:
    return content if isinstance(content, str) else _text_of(content)


def from_anthropic_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic turns as Relay's OpenAI-shaped messages: tool_result blocks become ``tool`` messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system if isinstance(system, str) else _text_of(system)})
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{i}].role must be 'user' or 'assistant'", param=f"messages[{i}].role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        blocks = content or []
        if role == "assistant":
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            out.append({"role": "assistant", "content": text} | ({"tool_calls": calls} if calls else {}))
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                result = {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": _result_text(block.get("content")),
                }
                out.append(result | ({"is_error": True} if block.get("is_error") else {}))
        parts = [
            _openai_part(block, f"messages[{i}].content[{j}]")
            for j, block in enumerate(blocks)
            if block.get("type") not in ("tool_result", "thinking", "redacted_thinking")
        ]
        if parts:
            out.append({"role": "user", "content": parts})
    return out


def from_anthropic_params(body: dict[str, Any]) -> dict[str, Any]:
    """Sampling, stop, tools and tool_choice as Relay's OpenAI-shaped params."""
    params: dict[str, Any] = {"max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p", "top_k", "thinking"):
        if body.get(key) is not None:
            params[key] = body[key]
    if body.get("stop_sequences"):
        params["stop"] = body["stop_sequences"]
    if body.get("tools"):
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
                },
            }
            for tool in body["tools"]
        ]
    choice = body.get("tool_choice")
    if choice:
        params["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
        }.get(choice.get("type"), {"type": "function", "function": {"name": choice.get("name", "")}})
        if choice.get("disable_parallel_tool_use"):
            params["parallel_tool_calls"] = False
    return params


class AnthropicEncoder:
    """Relay events as the Messages API's SSE, block by block, exactly as the SDK's stream helper expects."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.index = -1
        self.open: str | None = None  # the kind of the block being written, or a tool call's index
        self.usage: dict[str, int] = {}
        self.started = False
        self.tools: dict[int, dict[str, Any]] = {}

    @staticmethod
    def frame(data: dict[str, Any]) -> bytes:
        return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> bytes:
        self.started = True
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return self.frame({"type": "message_start", "message": message})

    def _switch(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = kind
        return out + self.frame({"type": "content_block_start", "index": self.index, "content_block": block})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return self.frame({"type": "content_block_stop", "index": self.index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self.frame({"type": "content_block_delta", "index": self.index, "delta": delta})

    def _tool(self, event: dict[str, Any]) -> bytes:
        """Blocks are sequential, so parallel calls' fragments wait until their own block is open."""
        index = event["index"]
        if event["type"] == "tool-call-start":
            self.tools[index] = {
                "id": event["tool_call_id"],
                "name": event["name"],
                "args": "",
                "written": 0,
                "begun": False,
            }
        tool = self.tools[index]
        if event["type"] == "tool-call-delta":
            tool["args"] += event["arguments_delta"]
        elif event["type"] == "tool-call-end":
            tool["args"] = event["arguments"]
        key = f"tool-{index}"
        out = b""
        if self.open != key and (self.open in (None, "text", "thinking") or event["type"] == "tool-call-end"):
            if tool["begun"]:
                return out
            tool["begun"] = True
            out += self._switch(key, {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}})
        if self.open == key and len(tool["args"]) > tool["written"]:
            out += self._delta({"type": "input_json_delta", "partial_json": tool["args"][tool["written"] :]})
            tool["written"] = len(tool["args"])
        return out

    def encode(self, events: list[dict[str, Any]]) -> bytes:
        out = bytearray() if self.started else bytearray(self.start())
        for event in events:
            kind = event["type"]
            if kind == "text-delta":
                if self.open != "text":
                    out += self._switch("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": event["content"]})
            elif kind == "reasoning-delta":
                if self.open != "thinking":
                    out += self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out += self._delta({"type": "thinking_delta", "thinking": event["content"]})
            elif kind.startswith("tool-call-"):
                out += self._tool(event)
            elif kind == "usage":
                self.usage = {
                    "input_tokens": event.get("input_tokens", 0),
                    "output_tokens": event.get("output_tokens", 0),
                }
            elif kind == "error":
                error = {"type": event["error_type"], "message": event["message"]}
                out += self._close() + self.frame({"type": "error", "error": error})
            elif kind == "finish":
                out += self._close()
                stop = {
                    "type": "message_delta",
                    "delta": {"stop_reason": STOP_FROM_FINISH[event["reason"]], "stop_sequence": None},
                }
                out += self.frame(stop | {"usage": {"output_tokens": self.usage.get("output_tokens", 0)}})
                out += self.frame({"type": "message_stop"})
        return bytes(out)


def anthropic_message(reply: Any, model: str) -> dict[str, Any]:
    """A finished ``Reply`` as the Messages API's non-streaming body."""
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning_content, "signature": ""})
    if reply.text:
        content.append({"type": "text", "text": reply.content})
    for call in reply.tool_call_list():
        arguments = call["function"]["arguments"] or "{}"
        content.append(
            {"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": orjson.loads(arguments)}
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": STOP_FROM_FINISH[reply.finish_reason or "stop"],
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.usage.get("input_tokens", 0),
            "output_tokens": reply.usage.get("output_tokens", 0),
            "cache_read_input_tokens": reply.usage.get("cache_read_tokens", 0),
            "cache_creation_input_tokens": reply.usage.get("cache_write_tokens", 0),
        },
    }


def anthropic_error_body(error: RelayError) -> dict[str, Any]:
    kind = {
        409: "invalid_request_error",
        422: "invalid_request_error",
        502: "api_error",
        503: "overloaded_error",
        504: "api_error",
    }.get(error.status_code, error.error_type)
    return {"type": "error", "error": {"type": kind, "message": error.message}}
