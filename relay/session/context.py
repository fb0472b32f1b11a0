"""What a provider sees of a session: a history budget, a rolling summary, and what Relay knows of the user.

Pure functions; ``relay.session.session`` decides when to call them. Summaries and
memories are written by a configured provider through the same pools as
chat, asked for JSON and read leniently, so any provider (even ``echo``) works.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "approx_tokens",
    "split_history",
    "build_context",
    "summary_prompt",
    "parse_summary",
    "memory_prompt",
    "parse_facts",
]


def approx_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    size = len(content) if isinstance(content, str) else len(orjson.dumps(content or ""))
    if message.get("tool_calls"):
        size += len(orjson.dumps(message["tool_calls"]))
    return 4 + size // 4


def split_history(
    history: list[dict[str, Any]], max_runs: int | None, max_tokens: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(older, recent): ``recent`` starts at a user turn and always holds the newest one."""
    conversation = [m for m in history if m.get("role") not in ("system", "developer")]
    starts = [i for i, m in enumerate(conversation) if m.get("role") == "user"]
    cut = starts[-1] if starts else 0
    tokens = sum(approx_tokens(m) for m in conversation[cut:])
    for runs, start in enumerate(reversed(starts[:-1]), start=2):
        extra = sum(approx_tokens(m) for m in conversation[start:cut])
        if (max_runs is not None and runs > max_runs) or (max_tokens is not None and tokens + extra > max_tokens):
            break
        cut, tokens = start, tokens + extra
    return conversation[:cut], conversation[cut:]


def build_context(
    history: list[dict[str, Any]],
    recent: list[dict[str, Any]],
    summary: str | None,
    topics: list[str],
    facts: list[str],
) -> list[dict[str, Any]]:
    """The caller's system messages, then Relay's notes (summary, user facts), then the recent turns."""
    messages = [m for m in history if m.get("role") in ("system", "developer")]
    if summary:
        note = f"Summary of the earlier conversation: {summary}"
        messages.append({"role": "system", "content": note + (f"\nTopics: {', '.join(topics)}" if topics else "")})
    if facts:
        messages.append(
            {"role": "system", "content": "What you know about this user:\n" + "\n".join(f"- {f}" for f in facts)}
        )
    return messages + recent


def _transcript(messages: list[dict[str, Any]]) -> str:
    lines = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else orjson.dumps(content or "").decode()
        lines.append(f"{message.get('role')}: {text}")
    return "\n".join(lines)


def summary_prompt(previous: str | None, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    instructions = (
        "Summarize the conversation below for the assistant that will continue it. Keep names, decisions, "
        'numbers and open questions. Reply with JSON only: {"summary": "...", "topics": ["..."]}.'
    )
    body = (f"Previous summary: {previous}\n\n" if previous else "") + _transcript(messages)
    return [{"role": "system", "content": instructions}, {"role": "user", "content": body}]


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_summary(text: str) -> tuple[str, list[str]]:
    """``{summary, topics}`` when the provider followed the instructions, else the whole text as the summary."""
    value = _json_object(text)
    if value is not None and isinstance(value.get("summary"), str):
        topics = [str(t) for t in value.get("topics") or [] if str(t).strip()]
        return value["summary"].strip(), topics
    return text.strip(), []


def memory_prompt(user_text: str) -> list[dict[str, Any]]:
    instructions = (
        "Extract lasting facts about the user (name, preferences, circumstances) from their message. "
        'Ignore requests and small talk. Reply with JSON only: {"facts": ["..."]}; an empty list if none.'
    )
    return [{"role": "system", "content": instructions}, {"role": "user", "content": user_text}]


def parse_facts(text: str) -> list[str]:
    """``{facts}`` when the provider followed the instructions, else one fact per non-empty line."""
    value = _json_object(text)
    if value is not None and isinstance(value.get("facts"), list):
        candidates = [str(f) for f in value["facts"]]
    else:
        candidates = text.splitlines()
    return [fact.strip().rstrip(".") for fact in candidates if fact.strip()][:20]
