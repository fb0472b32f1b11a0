"""The normalized event union: the spine that adapters produce and encoders consume.

On the hot path an event is a plain ``dict`` (cheap to pickle across Ray hops);
the Pydantic models below are its schema, used at the boundaries and in tests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "Event",
    "EVENT_ADAPTER",
    "FINISH_REASONS",
    "TERMINAL_TYPES",
    "TextDelta",
    "ReasoningDelta",
    "ToolCallStart",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolExecutionStart",
    "ToolExecutionEnd",
    "CacheHit",
    "UsageEvent",
    "CitationEvent",
    "StatusEvent",
    "WarningEvent",
    "ErrorEvent",
    "FinishEvent",
    "text_delta",
    "reasoning_delta",
    "usage",
    "status",
    "error_event",
    "finish",
    "tool_execution_start",
    "tool_execution_end",
    "cache_hit",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "cancelled"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "tool_calls", "content_filter", "error", "cancelled")
# Events that must never wait behind a coalescing window.
TERMINAL_TYPES = frozenset({"finish", "error"})


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The event's place in its run, a resume cursor: ``N``, or ``"N:k"`` for a chunk k characters into event N.
    id: int | str | None = None
    provider: str | None = None


class TextDelta(_Event):
    type: Literal["text-delta"] = "text-delta"
    content: str


class ReasoningDelta(_Event):
    """Reasoning text; ``signature`` closes an Anthropic thinking block, which must be sent back with tool turns.

    ``encrypted_content`` closes an OpenAI Responses reasoning item (``item_id``) the same way: with ``store:
    false`` the upstream keeps nothing, so the item goes back, encrypted content intact, on the next turn
    (RESPONSES.md §4, stateless reasoning).
    """

    type: Literal["reasoning-delta"] = "reasoning-delta"
    content: str
    signature: str | None = None
    encrypted_content: str | None = None
    item_id: str | None = None


class ToolCallStart(_Event):
    type: Literal["tool-call-start"] = "tool-call-start"
    index: int
    tool_call_id: str
    name: str


class ToolCallDelta(_Event):
    type: Literal["tool-call-delta"] = "tool-call-delta"
    index: int
    arguments_delta: str


class ToolCallEnd(_Event):
    type: Literal["tool-call-end"] = "tool-call-end"
    index: int
    tool_call_id: str
    name: str
    arguments: str


class ToolExecutionStart(_Event):
    """Relay starts running a server-side tool the model called (``step``: which model call asked for it)."""

    type: Literal["tool-execution-start"] = "tool-execution-start"
    tool_call_id: str
    name: str
    arguments: str
    step: int


class ToolExecutionEnd(_Event):
    """A server-side tool finished: ``result`` (what the model reads) or ``error`` (raised, timed out, too big)."""

    type: Literal["tool-execution-end"] = "tool-execution-end"
    tool_call_id: str
    name: str
    result: str | None = None
    error: str | None = None
    duration_ms: float
    step: int


class CacheHit(_Event):
    """The reply comes from the route's response cache; ``age_s`` since it was stored."""

    type: Literal["cache-hit"] = "cache-hit"
    route: str
    age_s: float


class UsageEvent(_Event):
    type: Literal["usage"] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class CitationEvent(_Event):
    """A source the text cites: a URL (OpenAI annotations) or a span of a document (Anthropic)."""

    type: Literal["citation"] = "citation"
    url: str | None = None
    title: str | None = None
    cited_text: str | None = None
    document_index: int | None = None
    start_index: int | None = None
    end_index: int | None = None


class StatusEvent(_Event):
    type: Literal["status"] = "status"
    status: Literal["started", "queued", "running", "retrying", "fallback", "summarizing"]
    message: str | None = None
    run_id: str | None = None


class WarningEvent(_Event):
    type: Literal["warning"] = "warning"
    message: str
    code: str | None = None


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    error_type: str
    message: str
    retryable: bool = False
    status_code: int = 500
    retry_after: float | None = None
    code: str | None = None


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_ms: float | None = None
    total_ms: float
    tokens_per_s: float | None = None
    model: str | None = None
    provider: str | None = None
    # The run's cost in USD (relay.spend); None, with ``unpriced``, when a model it called has no price.
    cost_usd: float | None = None
    unpriced: bool = False


class FinishEvent(_Event):
    type: Literal["finish"] = "finish"
    reason: FinishReason
    run_id: str | None = None
    session_id: str | None = None
    metrics: Metrics | None = None


Event = Annotated[
    TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | ToolExecutionStart
    | ToolExecutionEnd
    | CacheHit
    | UsageEvent
    | CitationEvent
    | StatusEvent
    | WarningEvent
    | ErrorEvent
    | FinishEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def text_delta(content: str) -> dict[str, Any]:
    return {"type": "text-delta", "content": content}


def reasoning_delta(content: str) -> dict[str, Any]:
    return {"type": "reasoning-delta", "content": content}


def usage(input_tokens: int = 0, output_tokens: int = 0, **extra: int) -> dict[str, Any]:
    return {"type": "usage", "input_tokens": input_tokens, "output_tokens": output_tokens, **extra}


def status(value: str, message: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "status", "status": value}
    if message:
        event["message"] = message
    if run_id:
        event["run_id"] = run_id
    return event


def error_event(error_type: str, message: str, *, retryable: bool = False, status_code: int = 500) -> dict[str, Any]:
    return {
        "type": "error",
        "error_type": error_type,
        "message": message,
        "retryable": retryable,
        "status_code": status_code,
    }


def finish(reason: str, **fields: Any) -> dict[str, Any]:
    return {"type": "finish", "reason": reason, **fields}


def tool_execution_start(tool_call_id: str, name: str, arguments: str, step: int) -> dict[str, Any]:
    return {
        "type": "tool-execution-start",
        "tool_call_id": tool_call_id,
        "name": name,
        "arguments": arguments,
        "step": step,
    }


def tool_execution_end(
    tool_call_id: str, name: str, *, result: str | None, error: str | None, duration_ms: float, step: int
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "tool-execution-end", "tool_call_id": tool_call_id, "name": name}
    event["result" if error is None else "error"] = result if error is None else error
    return event | {"duration_ms": duration_ms, "step": step}


def cache_hit(route: str, age_s: float) -> dict[str, Any]:
    return {"type": "cache-hit", "route": route, "age_s": age_s}
