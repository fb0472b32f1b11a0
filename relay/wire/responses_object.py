"""The Response object's parts that do not depend on the stream: its skeleton, its usage, the flat error event.

Split from ``relay.wire.responses`` (which re-exports them) to keep that module about the stream.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["ECHO_FIELDS", "response_skeleton", "responses_usage", "error_event", "ANTHROPIC_PREFIX"]

# What ``encrypted_content`` starts with when it carries an Anthropic thinking signature (relay.wire.responses).
ANTHROPIC_PREFIX = "relay.anthropic."
# The body fields a Response echoes (§1 "Response object"), with what an unset one shows.
_ECHO: dict[str, Any] = dict.fromkeys(
    [
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "temperature",
        "top_logprobs",
        "top_p",
        "user",
    ]
) | {
    "metadata": {},
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "truncation": "disabled",
}


# The request fields a Response repeats back (§1 "Response object"), in the order the docs list them.
ECHO_FIELDS: tuple[str, ...] = tuple(_ECHO)


def response_skeleton(
    *,
    response_id: str,
    created_at: int,
    model: str,
    previous_response_id: str | None = None,
    conversation_id: str | None = None,
    background: bool = False,
    store: bool = True,
    queued: bool = False,
    reasoning: dict[str, Any] | None = None,
    **echo: Any,
) -> dict[str, Any]:
    """Every key of §1 "Response object", ``null`` where unset: clients dereference fields without checking them.

    ``echo``: the body fields the Response repeats (``instructions``, ``tools`` in their flat form, ``tool_choice``,
    ``text``, ``temperature``, ``metadata``…); one left out or ``None`` shows its default.
    """
    if unknown := echo.keys() - _ECHO.keys():
        raise TypeError(f"response_skeleton() got unknown fields {sorted(unknown)}")
    response = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "queued" if queued else "in_progress",
        "background": background,
        "completed_at": None,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "previous_response_id": previous_response_id,
        "reasoning": {"effort": (reasoning or {}).get("effort"), "summary": (reasoning or {}).get("summary")},
        "store": store,
        "usage": None,
    }
    return response | {key: default if echo.get(key) is None else echo[key] for key, default in _ECHO.items()}


def responses_usage(total: dict[str, int] | None) -> dict[str, Any]:
    """Relay's summed usage keys as §1 ``usage``: every subfield an int, ``cache_write_tokens`` included."""
    total = total or {}
    inputs = total.get("input_tokens", 0)
    outputs = total.get("output_tokens", 0)
    return {
        "input_tokens": inputs,
        "input_tokens_details": {
            "cached_tokens": total.get("cache_read_tokens", 0),
            "cache_write_tokens": total.get("cache_write_tokens", 0),
        },
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": total.get("reasoning_tokens", 0)},
        "total_tokens": inputs + outputs,
    }


def error_event(message: str, *, code: str | None = None, param: str | None = None, sequence_number: int = 0) -> bytes:
    """The flat ``error`` event (§3) for a failure before ``response.created``; routes mostly answer 4xx/5xx JSON."""
    body = {"type": "error", "sequence_number": sequence_number, "code": code, "message": message, "param": param}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
