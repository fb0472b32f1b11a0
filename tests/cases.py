"""Bad-input cases shared by the in-process and the Ray-served HTTP tests."""

from __future__ import annotations

from typing import Any

# (name, path, raw body, expected status, expected param, text the message must contain)
BAD_INPUT: list[tuple[str, str, bytes, int, str | None, str]] = [
    ("malformed-json", "/v1/chat/completions", b'{"model": "echo", "messages": [', 400, None, "Malformed JSON"),
    ("empty-body", "/api/streaming/chat", b"", 400, None, "empty"),
    ("not-an-object", "/api/streaming/chat", b"[1, 2]", 400, None, "JSON object"),
    ("missing-messages", "/v1/chat/completions", b'{"model": "echo"}', 400, "messages", "required"),
    ("empty-messages", "/api/streaming/chat", b'{"messages": []}', 400, "messages", "at least one"),
    (
        "unknown-role",
        "/v1/chat/completions",
        b'{"model": "echo", "messages": [{"role": "wizard", "content": "hi"}]}',
        400,
        "messages[0].role",
        "wizard",
    ),
    (
        "unknown-provider",
        "/api/streaming/chat",
        b'{"provider_id": "nope", "messages": [{"role": "user", "content": "hi"}]}',
        404,
        "provider_id",
        "nope",
    ),
    (
        "unknown-model",
        "/v1/chat/completions",
        b'{"model": "gpt-nope", "messages": [{"role": "user", "content": "hi"}]}',
        404,
        "model",
        "gpt-nope",
    ),
    (
        "stream-options-without-stream",
        "/v1/chat/completions",
        b'{"model": "echo", "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}',
        400,
        "stream_options",
        "stream",
    ),
    (
        "bad-stream-format",
        "/api/streaming/chat",
        b'{"stream_format": "xml", "messages": [{"role": "user", "content": "hi"}]}',
        400,
        "stream_format",
        "sse",
    ),
]


def check_error(response: Any, status: int, param: str | None, text: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param", "code"}
    assert error["param"] == param
    assert text in error["message"]
