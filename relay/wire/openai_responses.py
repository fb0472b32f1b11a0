"""Relay requests to OpenAI Responses bodies, and raw Responses stream events back to Relay events.

Relay holds the conversation, so every request is stateless: ``store: false``
and ``include: ["reasoning.encrypted_content"]``; the reasoning items a turn
produced come back as input items ahead of that turn's output, encrypted
content intact (RESPONSES.md §4, stateless reasoning). Events are parsed from
raw SSE lines with orjson, as the Chat Completions path does (DESIGN.md).
"""

from __future__ import annotations

from typing import Any

from relay.errors import RelayError, error_for_status
from relay.events import finish, reasoning_delta, text_delta
from relay.wire.openai import prepare_messages

__all__ = ["ResponsesStream", "responses_body", "responses_input", "responses_usage"]

# Chat Completions parameters the Responses API has no field for; it answers each with 400 "Unknown parameter".
_CHAT_ONLY = frozenset(
    {"stop", "n", "seed", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "modalities", "audio"}
)
# Parameters only other wire formats understand.
_FOREIGN = frozenset({"thinking", "top_k"})
# Renamed or reshaped below.
_MAPPED = frozenset(
    {"tools", "tool_choice", "response_format", "reasoning_effort", "max_tokens", "max_completion_tokens"}
)
# ``response.failed`` and ``error`` codes that mean a client-side status (RESPONSES.md §1, Response.error); any
# other code (``server_error``, …) is the provider's fault, a 502.
_FAILED_STATUS = {"rate_limit_exceeded": 429, "invalid_prompt": 400}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if part.get("type") in ("text", "input_text"))


def _input_part(part: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions content part as a Responses one (§2, content parts); text files are text already."""
    kind = part["type"]
    if kind == "text":
        return {"type": "input_text", "text": part["text"]}
    if kind == "image_url":
        image = part["image_url"]
        return {"type": "input_image", "image_url": image["url"], "detail": image.get("detail") or "auto"}
    if kind == "file":
        return {"type": "input_file"} | {
            k: v for k, v in part["file"].items() if k in ("file_data", "file_id", "filename")
        }
    return part  # e.g. input_audio, which the Responses API rejects: features_for leaves "audio" out


def _assistant_items(message: dict[str, Any], original: dict[str, Any]) -> list[dict[str, Any]]:
    """A turn replayed as output items: its reasoning first, then its text, then its calls (§2).

    A reasoning item sent without the item that followed it is a 400 (§4), so a turn that produced only
    reasoning (cut by its token limit) goes back as nothing.
    """
    output: list[dict[str, Any]] = []
    text = _text(message.get("content"))
    if text:
        output.append({"type": "message", "role": "assistant", "content": text})
    for call in message.get("tool_calls") or ():
        function = call["function"]
        call_id, name, arguments = call["id"], function["name"], function["arguments"]
        output.append({"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments})
    reasoning = [
        {"type": "reasoning", "summary": block.get("summary") or []}
        | ({"id": block["id"]} if block.get("id") else {})
        | {"encrypted_content": block["encrypted_content"]}
        for block in original.get("thinking_blocks") or ()
        if block.get("type") == "reasoning" and block.get("encrypted_content")
    ]
    return reasoning + output if output else []


def responses_input(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(instructions, input items)``: leading system messages become ``instructions``, later ones developer ones."""
    leading: list[str] = []
    items: list[dict[str, Any]] = []
    for original, message in zip(messages, prepare_messages(messages), strict=True):
        role = message["role"]
        content = message.get("content")
        if role in ("system", "developer"):
            if not items:
                leading.append(_text(content))
            else:
                items.append({"type": "message", "role": "developer", "content": _text(content)})
        elif role == "assistant":
            items += _assistant_items(message, original)
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"], "output": _text(content)})
        else:
            parts = content if isinstance(content, str) else [_input_part(part) for part in content or ()]
            items.append({"type": "message", "role": "user", "content": parts})
    return ("\n\n".join(leading) if leading else None), items


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Chat tools nest under ``function``; Responses tools are flat (§1). Responses defaults ``strict`` to true:
    a Chat tool is not strict unless it says so, so the flag is always sent."""
    if tool.get("type") != "function" or "function" not in tool:
        return tool
    function = tool["function"]
    flat = {"type": "function", "name": function["name"], "parameters": function.get("parameters")}
    flat["strict"] = bool(function.get("strict", False))
    return flat | ({"description": function["description"]} if function.get("description") else {})


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and "function" in choice:
        return {"type": "function", "name": choice["function"]["name"]}
    return choice


def _text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` as ``text.format``: the JSON schema sits directly under ``format`` (§1)."""
    if response_format.get("type") != "json_schema":
        return {"type": response_format["type"]}
    spec = response_format.get("json_schema") or {}
    keys = ("name", "schema", "strict", "description")
    return {"type": "json_schema"} | {key: spec[key] for key in keys if spec.get(key) is not None}


def responses_body(params: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The create fields for one Relay turn (without ``model`` and ``stream``, which the adapter sets)."""
    instructions, items = responses_input(messages)
    body: dict[str, Any] = {key: value for key, value in params.items() if key not in _CHAT_ONLY | _FOREIGN | _MAPPED}
    body |= {"input": items, "store": False, "include": ["reasoning.encrypted_content"]}
    if instructions is not None:
        body["instructions"] = instructions
    if params.get("tools"):
        body["tools"] = [_tool(tool) for tool in params["tools"]]
    if params.get("tool_choice") is not None:
        body["tool_choice"] = _tool_choice(params["tool_choice"])
    if params.get("response_format"):
        body["text"] = {"format": _text_format(params["response_format"])}
    if params.get("reasoning_effort"):
        body["reasoning"] = {"effort": params["reasoning_effort"], "summary": "auto"}
    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    if limit is not None:
        body["max_output_tokens"] = limit
    return body


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """The terminal ``usage``, named as the Chat Completions path names it (relay.wire.openai.usage_event)."""
    return {
        "type": "usage",
        "input_tokens": usage.get("input_tokens") or 0,
        "output_tokens": usage.get("output_tokens") or 0,
        "cache_read_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    }


def _citation(annotation: dict[str, Any]) -> dict[str, Any]:
    """Responses annotations are flat: ``{type: "url_citation", url, title, start_index, end_index}`` (§2)."""
    event: dict[str, Any] = {"type": "citation"}
    for key in ("url", "title", "start_index", "end_index"):
        if annotation.get(key) is not None:
            event[key] = annotation[key]
    return event


class ResponsesStream:
    """Folds Responses stream events (§3) into Relay events; ``reason`` is set by the terminal event.

    Tool calls are keyed by ``output_index`` (the AI SDK does the same) and numbered 0, 1, … in the order their
    items open, as Chat Completions numbers them.
    """

    def __init__(self, provider_id: str) -> None:
        self.prefix = f"{provider_id}: "
        self.tools: dict[int, int] = {}  # output_index: Relay tool-call index
        self.reason: str | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return [text_delta(event["delta"])] if event["delta"] else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [reasoning_delta(event["delta"])] if event["delta"] else []
        if kind == "response.reasoning_summary_part.added" and event.get("summary_index", 0) > 0:
            return [reasoning_delta("\n\n")]  # summary parts are paragraphs of one block
        if kind == "response.output_text.annotation.added":
            return [_citation(event["annotation"])]
        if kind == "response.function_call_arguments.delta":
            index = self.tools[event["output_index"]]
            return (
                [{"type": "tool-call-delta", "index": index, "arguments_delta": event["delta"]}]
                if event["delta"]
                else []
            )
        if kind == "response.output_item.added" and event["item"]["type"] == "function_call":
            item = event["item"]
            self.tools[event["output_index"]] = index = len(self.tools)
            return [{"type": "tool-call-start", "index": index, "tool_call_id": item["call_id"], "name": item["name"]}]
        if kind == "response.output_item.done":
            return self._item_done(event["output_index"], event["item"])
        if kind in ("response.completed", "response.incomplete"):
            return self._terminal(event["response"])
        if kind == "response.failed":
            raise self._failure(event["response"].get("error") or {})
        if kind == "error":
            raise self._failure(event)
        return []

    def _item_done(self, output_index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        if item["type"] == "function_call":
            call = {"index": self.tools[output_index], "tool_call_id": item["call_id"], "name": item["name"]}
            return [{"type": "tool-call-end", **call, "arguments": item.get("arguments") or ""}]
        if item["type"] == "reasoning" and item.get("encrypted_content"):
            closing = reasoning_delta("") | {"encrypted_content": item["encrypted_content"]}
            return [closing | ({"item_id": item["id"]} if item.get("id") else {})]
        return []

    def _terminal(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        if response.get("status") == "incomplete":
            why = (response.get("incomplete_details") or {}).get("reason")
            self.reason = "content_filter" if why == "content_filter" else "length"
        else:
            self.reason = "tool_calls" if self.tools else "stop"
        return [responses_usage(response["usage"])] if response.get("usage") else []

    def _failure(self, error: dict[str, Any]) -> RelayError:
        """A failed response or an ``error`` event, on Relay's hierarchy by its code; other codes are a 502."""
        code = error.get("code")
        status = _FAILED_STATUS.get(str(code), 502)
        message = f"{self.prefix}upstream error: {error.get('message', '')}"
        return error_for_status(status, message, param=error.get("param"), code=str(code) if code else None)

    def close(self) -> list[dict[str, Any]]:
        """The ``finish``, once the terminal event was seen (tool calls end with their items)."""
        return [finish(self.reason or "stop")]
