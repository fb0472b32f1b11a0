"""Folds an event stream into the finished reply: what non-streaming clients and the store see.

A signed reasoning delta closes a thinking block. The blocks travel with the
assistant message (``thinking_blocks``, as LiteLLM names them) because Anthropic
requires them, signature intact, ahead of ``tool_use`` in the next request when
thinking is on. A delta with ``encrypted_content`` closes an OpenAI Responses
reasoning item instead (``type: "reasoning"``), which goes back as an input item
because the upstream stores nothing (``store: false``, RESPONSES.md §4).

A tool call that Relay ran server-side (a ``tool-execution-end`` names it)
carries its ``execution`` (result or error, duration, step) in the run's stored
history; the calls left for the client are ``client_tool_calls``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reply"]


def _closed_block(thinking: str, event: dict[str, Any]) -> dict[str, Any]:
    if event.get("signature"):
        return {"type": "thinking", "thinking": thinking, "signature": event["signature"]}
    summary = [{"type": "summary_text", "text": thinking}] if thinking else []
    return {
        "type": "reasoning",
        "id": event.get("item_id"),
        "summary": summary,
        "encrypted_content": event["encrypted_content"],
    }


def _unsigned(reasoning: dict[str, Any]) -> dict[str, Any]:
    summary = "".join(part.get("text", "") for part in reasoning["summary"])
    return {"type": "thinking", "thinking": summary, "signature": ""}


@dataclass(slots=True)
class Reply:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    thinking_blocks: list[dict[str, Any]] = field(default_factory=list)
    _thinking_from: int = 0  # where in ``reasoning`` the open thinking block starts
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)  # tool_call_id: what running it gave
    citations: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    error: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "text-delta":
            self.text.append(event["content"])
        elif kind == "reasoning-delta":
            if event["content"]:
                self.reasoning.append(event["content"])
            if event.get("signature") or event.get("encrypted_content"):
                thinking = "".join(self.reasoning[self._thinking_from :])
                self.thinking_blocks.append(_closed_block(thinking, event))
                self._thinking_from = len(self.reasoning)
        elif kind == "tool-call-start":
            self.tool_calls[event["index"]] = {
                "id": event["tool_call_id"],
                "type": "function",
                "function": {"name": event["name"], "arguments": ""},
            }
        elif kind == "tool-call-delta":
            self.tool_calls[event["index"]]["function"]["arguments"] += event["arguments_delta"]
        elif kind == "tool-call-end":
            self.tool_calls[event["index"]]["function"]["arguments"] = event["arguments"]
        elif kind == "tool-execution-end":
            self.executions[event["tool_call_id"]] = {
                key: event[key] for key in ("result", "error", "duration_ms", "step") if key in event
            }
        elif kind == "citation":
            self.citations.append({key: value for key, value in event.items() if key not in ("type", "id", "provider")})
        elif kind == "usage":  # one per model call: a run with tool steps makes several, and spends their sum
            for key, value in event.items():
                if key.endswith("_tokens"):
                    self.usage[key] = self.usage.get(key, 0) + value
        elif kind == "error":
            self.error = {
                key: event[key]
                for key in ("error_type", "message", "status_code", "retry_after", "code")
                if key in event
            }
        elif kind == "finish":
            self.finish_reason = event["reason"]

    def extend(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.add(event)

    @property
    def content(self) -> str:
        return "".join(self.text)

    @property
    def reasoning_content(self) -> str:
        return "".join(self.reasoning)

    def thinking(self) -> list[dict[str, Any]]:
        """Every thinking block: the signed ones, then any reasoning no signature closed (``signature: ""``).

        Anthropic-shaped (the Messages encoder reads them): an OpenAI reasoning item is its summary, unsigned.
        """
        rest = "".join(self.reasoning[self._thinking_from :])
        blocks = [block if block["type"] == "thinking" else _unsigned(block) for block in self.thinking_blocks]
        return blocks + ([{"type": "thinking", "thinking": rest, "signature": ""}] if rest else [])

    def _calls(self) -> list[dict[str, Any]]:
        return [self.tool_calls[index] for index in sorted(self.tool_calls)]

    def tool_call_list(self) -> list[dict[str, Any]]:
        """Every call, with its ``execution`` when Relay ran it: the run's tool-call history."""
        executions = self.executions
        return [
            call | {"execution": executions[call["id"]]} if call["id"] in executions else call for call in self._calls()
        ]

    def client_tool_calls(self) -> list[dict[str, Any]]:
        """The calls Relay did not run: the client's to answer."""
        return [call for call in self._calls() if call["id"] not in self.executions]

    def executed_tool_calls(self) -> list[dict[str, Any]]:
        return [call for call in self.tool_call_list() if "execution" in call]

    def assistant_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = self._calls()
        if self.thinking_blocks:
            message["thinking_blocks"] = self.thinking_blocks
        return message
