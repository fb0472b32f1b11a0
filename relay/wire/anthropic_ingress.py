"""The Messages API served by Relay (``POST /v1/messages``): Anthropic-shaped requests in, replies out.

Requests become Relay's OpenAI-shaped messages (thinking blocks ride along as
``thinking_blocks``); events become the Messages API's SSE or one message body.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson

from relay.errors import InvalidRequest, RelayError, UnsupportedFeature

__all__ = [
    "STOP_FROM_FINISH",
    "text_of",
    "from_anthropic_messages",
    "from_anthropic_params",
    "AnthropicEncoder",
    "anthropic_message",
    "anthropic_error_body",
    "anthropic_error_body_for",
]

STOP_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
    "cancelled": "end_turn",
}
_ANTHROPIC_TYPE_OF_STATUS = {
    409: "invalid_request_error",
    422: "invalid_request_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def text_of(content: Any) -> str:
    """A string content, or the text of its text blocks or parts."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if part.get("type") == "text")


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
    return content if isinstance(content, str) else text_of(content)


def from_anthropic_messages(system: Any, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic turns as Relay's OpenAI-shaped messages: tool_result blocks become ``tool`` messages."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system if isinstance(system, str) else text_of(system)})
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
            thinking = [b for b in blocks if b.get("type") in ("thinking", "redacted_thinking")]
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            out.append(
                {"role": "assistant", "content": text}
                | ({"tool_calls": calls} if calls else {})
                | ({"thinking_blocks": thinking} if thinking else {})
            )
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
    """Relay events as the Messages API's SSE, block by block, exactly as the SDK's stream helper expects.

    As the API does: one ``ping`` after the first block starts, a thinking block ends with its
    ``signature_delta``, and usage (cache tokens included) goes in ``message_start`` when the first batch
    already holds it, and in the closing ``message_delta`` always.
    """

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

    def start(self, events: list[dict[str, Any]] | None = None) -> bytes:
        self.started = True
        known = next((event for event in events or () if event["type"] == "usage"), None)
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(known or {}) | {"output_tokens": 0},
        }
        return self.frame({"type": "message_start", "message": message})

    def _switch(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = kind
        out += self.frame({"type": "content_block_start", "index": self.index, "content_block": block})
        return out + (PING if self.index == 0 else b"")

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

    def _reasoning(self, event: dict[str, Any]) -> bytes:
        out = b""
        if self.open != "thinking":
            out += self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if event["content"]:
            out += self._delta({"type": "thinking_delta", "thinking": event["content"]})
        if event.get("signature"):  # the block is complete; more reasoning opens the next one
            out += self._delta({"type": "signature_delta", "signature": event["signature"]}) + self._close()
        return out

    def encode(self, events: list[dict[str, Any]]) -> bytes:
        out = bytearray() if self.started else bytearray(self.start(events))
        for event in events:
            kind = event["type"]
            if kind == "text-delta":
                if self.open != "text":
                    out += self._switch("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": event["content"]})
            elif kind == "reasoning-delta":
                out += self._reasoning(event)
            elif kind.startswith("tool-call-"):
                out += self._tool(event)
            elif kind == "usage":
                self.usage = _usage(event) | {"output_tokens": event.get("output_tokens", 0)}
            elif kind == "error":
                body = anthropic_error_body_for(event["error_type"], event.get("status_code", 500), event["message"])
                out += self._close() + self.frame(body)
            elif kind == "finish":
                out += self._close()
                stop = {
                    "type": "message_delta",
                    "delta": {"stop_reason": STOP_FROM_FINISH[event["reason"]], "stop_sequence": None},
                }
                out += self.frame(stop | {"usage": self.usage or {"output_tokens": 0}})
                out += self.frame({"type": "message_stop"})
        return bytes(out)


def anthropic_message(reply: Any, model: str) -> dict[str, Any]:
    """A finished ``Reply`` as the Messages API's non-streaming body."""
    content: list[dict[str, Any]] = reply.thinking()
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


def _usage(event: dict[str, Any]) -> dict[str, int]:
    """A usage event's input side in the Messages API's names."""
    return {
        "input_tokens": event.get("input_tokens", 0),
        "cache_creation_input_tokens": event.get("cache_write_tokens", 0),
        "cache_read_input_tokens": event.get("cache_read_tokens", 0),
    }


def anthropic_error_body_for(error_type: str, status_code: int, message: str) -> dict[str, Any]:
    """``{"type": "error", "error": {type, message}, "request_id"}``, with Relay's types mapped onto Anthropic's."""
    kind = _ANTHROPIC_TYPE_OF_STATUS.get(status_code, error_type)
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex[:24]}"}


def anthropic_error_body(error: RelayError) -> dict[str, Any]:
    return anthropic_error_body_for(error.error_type, error.status_code, error.message)
