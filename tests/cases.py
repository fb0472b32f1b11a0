"""Shared test data: bad-input cases for both HTTP paths, media samples, and adapter-stream helpers."""

from __future__ import annotations

import base64
from typing import Any

from relay.config import ProviderConfig
from relay.events import EVENT_ADAPTER
from relay.providers import BaseProviderAdapter, adapter_class
from relay.request import ChatRequest

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
PDF = base64.b64encode(b"%PDF-1.4 fake").decode()
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def user_request(text: str = "hello big world", provider: str = "p", **kw: Any) -> ChatRequest:
    return ChatRequest(provider=provider, messages=[{"role": "user", "content": text}], **kw)


async def adapter_events(adapter: Any, request: ChatRequest) -> list[dict[str, Any]]:
    """All events of one adapter stream, each checked against the schema; exactly one ``finish``, last."""
    events = [event async for event in adapter.stream_chat(request)]
    for event in events:
        EVENT_ADAPTER.validate_python(event)
    assert [e["type"] for e in events].count("finish") == 1 and events[-1]["type"] == "finish"
    return events


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
    (
        "unsupported-feature",
        "/v1/chat/completions",
        b'{"model": "echo", "messages": [{"role": "user", "content": "x"}],'
        b' "tools": [{"type": "function", "function": {"name": "f"}}]}',
        400,
        "tools",
        "Provider 'echo' (echo) does not support tools",
    ),
    (
        "local-path-over-http",
        "/api/streaming/chat",
        b'{"messages": [{"role": "user", "content": "x", "images": ["/etc/hostname"]}]}',
        400,
        "messages[0].images[0]",
        "not accepted",
    ),
    (
        "bad-data-uri",
        "/v1/chat/completions",
        b'{"model": "echo", "messages": [{"role": "user", "content":'
        b' [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]}',
        400,
        "messages[0].content[0].image_url",
        "data URI",
    ),
    (
        "response-format-without-name",
        "/v1/chat/completions",
        b'{"model": "echo", "messages": [{"role": "user", "content": "x"}],'
        b' "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}',
        400,
        "response_format.json_schema.name",
        "required",
    ),
    (
        "unknown-fallback",
        "/api/streaming/chat",
        b'{"fallbacks": ["nowhere"], "messages": [{"role": "user", "content": "x"}]}',
        400,
        "fallbacks[0]",
        "nowhere",
    ),
    (
        "unknown-generator-mode",
        "/api/streaming/chat",
        b'{"generator_mode": "telepathic", "messages": [{"role": "user", "content": "x"}]}',
        400,
        "generator_mode",
        "telepathic",
    ),
    (
        "interleaved-needs-providers",
        "/api/streaming/chat",
        b'{"generator_mode": "interleaved", "provider_ids": ["echo"], "messages": [{"role": "user", "content": "x"}]}',
        400,
        "provider_ids",
        "at least two",
    ),
    (
        "register-unknown-type",
        "/api/streaming/providers/register",
        b'{"provider_id": "x1", "provider_type": "telepathy"}',
        400,
        "provider_type",
        "telepathy",
    ),
    (
        "register-bad-id",
        "/api/streaming/providers/register",
        b'{"provider_id": "has space", "provider_type": "echo"}',
        400,
        "provider_id",
        "pattern",
    ),
]


def check_error(response: Any, status: int, param: str | None, text: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "param", "code"}
    assert error["param"] == param
    assert text in error["message"]


def create_adapter(config: ProviderConfig) -> BaseProviderAdapter:
    """An adapter built as a pool replica builds it, for tests that drive one directly."""
    return adapter_class(config)(config)
