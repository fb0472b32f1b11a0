"""Hostile input over real HTTP and WebSocket: each case is a 4xx naming the field, and the server keeps serving."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.io import MAX_BODY_BYTES, MAX_DEPTH
from relay.session.local_backend import LocalBackend
from tests.cases import PNG, check_error
from tests.fakes.openai_upstream import ServerThread

HI = {"role": "user", "content": "hi"}
PNG_BYTES = base64.b64decode(PNG)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "media").mkdir()
    (root / "media" / "ok.png").write_bytes(PNG_BYTES)
    (root / "secret.png").write_bytes(PNG_BYTES)  # beside media_dirs, not in it
    return root


@pytest.fixture(scope="module")
def server(media: Path) -> Iterator[str]:
    settings = RelaySettings(
        store_url=f"sqlite:///{media / 'relay.db'}",
        providers=[ProviderConfig(provider_id="echo", provider_type="echo", model="echo")],
        media_dirs=[str(media / "media")],
    )
    with ServerThread(build_app(LocalBackend(settings))) as running:
        yield running.url


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


def chat(**fields: object) -> bytes:
    return orjson.dumps({"messages": [HI], "stream_format": "json"} | fields)


def openai(**fields: object) -> bytes:
    return orjson.dumps({"model": "echo", "messages": [HI]} | fields)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def still_serving(http: httpx.Client) -> None:
    reply = http.post("/api/streaming/chat", json={"messages": [HI], "stream_format": "json"})
    assert reply.status_code == 200 and reply.json()["content"] == "hi"


JSON = {"content-type": "application/json"}
IMAGE_PART = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}


def images(*paths: str) -> bytes:
    return chat(messages=[{"role": "user", "content": "x", "images": list(paths)}])


POST_CASES: list[tuple[str, str, bytes, dict[str, str], int, str | None, str]] = [
    # (name, path, body, headers, status, param, text the message must contain); {MEDIA}: the media directory
    ("truncated-json", "/api/streaming/chat", chat()[:-7], JSON, 400, None, "Malformed JSON"),
    ("truncated-utf8", "/v1/chat/completions", '{"messages": "é'.encode()[:-1], JSON, 400, None, "JSON"),
    ("invalid-utf8", "/api/streaming/chat", chat()[:-30] + b"\xff\xfe" + chat()[-30:], JSON, 400, None, "UTF-8"),
    ("too-deep-to-parse", "/api/streaming/chat", nested(5000).encode(), JSON, 400, None, "depth"),
    (
        "too-deep-to-store",
        "/api/streaming/chat",
        f'{{"messages": [{{"role": "user", "content": "x", "meta": {nested(MAX_DEPTH)}}}]}}'.encode(),
        JSON,
        400,
        "body",
        f"deeper than {MAX_DEPTH} levels",
    ),
    (
        "nesting-in-a-typed-field",
        "/api/streaming/chat",
        f'{{"messages": [{{"role": "user", "content": {nested(20)}}}]}}'.encode(),
        JSON,
        400,
        "messages[0].content[0]",
        "dictionary",
    ),
    (
        "huge-model-name",
        "/v1/chat/completions",
        orjson.dumps({"model": "m" * 10**6, "messages": [HI]}),
        JSON,
        404,
        "model",
        "does not exist",
    ),
    (
        "huge-session-header",
        "/api/streaming/chat",
        chat(),
        JSON | {"X-Session-Id": "s" * 8000},
        400,
        "X-Session-Id",
        "1-128",
    ),
    ("huge-stream-format", "/api/streaming/chat", chat(stream_format="x" * 10**5), JSON, 400, "stream_format", "sse"),
    (
        "bad-base64-image",
        "/v1/chat/completions",
        openai(messages=[IMAGE_PART]),
        JSON,
        400,
        "messages[0].content[0].image_url",
        "not valid base64",
    ),
    (
        "base64-bad-past-its-start",
        "/api/streaming/chat",
        images(f"data:image/png;base64,{PNG * 8}!!!!"),
        JSON,
        400,
        "messages[0].images[0]",
        "not valid base64",
    ),
    (
        "empty-base64-image",
        "/api/streaming/chat",
        images("data:image/png;base64,"),
        JSON,
        400,
        "messages[0].images[0]",
        "empty",
    ),
    ("text-plain-body", "/api/streaming/chat", chat(), {"content-type": "text/plain"}, 415, "Content-Type", "json"),
    (
        "form-body",
        "/v1/chat/completions",
        b"model=echo",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "Content-Type",
        "application/json",
    ),
    ("unknown-field", "/api/streaming/chat", chat(temprature=0.2), JSON, 400, "temprature", "Unknown field"),
    ("unknown-field-openai", "/v1/chat/completions", openai(stram=True), JSON, 400, "stram", "Unknown"),
    ("unknown-field-session", "/api/sessions", b'{"nmae": "typo"}', JSON, 400, "nmae", "Extra inputs"),
    ("negative-max-tokens", "/api/streaming/chat", chat(max_tokens=-1), JSON, 400, "max_tokens", "greater than"),
    ("zero-max-tokens", "/v1/chat/completions", openai(max_tokens=0), JSON, 400, "max_tokens", "greater"),
    ("huge-max-tokens", "/api/streaming/chat", chat(max_tokens=10**15), JSON, 400, "max_tokens", "less than"),
    (
        "beyond-64-bit-max-tokens",
        "/api/streaming/chat",
        chat()[:-1] + b', "max_tokens": 1' + b"0" * 40 + b"}",
        JSON,
        400,
        "max_tokens",
        "Invalid 'max_tokens'",
    ),
    (
        "path-traversal",
        "/api/streaming/chat",
        images("{MEDIA}/media/../secret.png"),
        JSON,
        400,
        "messages[0].images[0]",
        "not accepted",
    ),
    (
        "path-outside",
        "/api/streaming/chat",
        chat(messages=[{"role": "user", "content": "x", "files": ["/etc/passwd"]}]),
        JSON,
        400,
        "messages[0].files[0]",
        "not accepted",
    ),
    ("echo-repeat-bomb", "/api/streaming/chat", chat(provider_options={"repeat": 10**9}), JSON, 400, None, "repeat"),
    (
        "bad-provider-url",
        "/api/streaming/providers/register",
        b'{"provider_id": "h1", "provider_type": "openai_compatible", "base_url": "http://[::1"}',
        JSON,
        400,
        "base_url",
        "http://",
    ),
    (
        "header-injection",
        "/api/streaming/providers/register",
        b'{"provider_id": "h2", "provider_type": "openai", "default_headers": {"X-A": "1\\r\\nX-B: 2"}}',
        JSON,
        400,
        "default_headers",
        "printable ASCII",
    ),
]
GET_CASES = [
    ("negative-limit", "/api/sessions?limit=-5", "limit"),
    ("huge-before", "/api/sessions/{SESSION}/messages?before=" + "9" * 30, "before"),
    ("huge-limit", "/api/sessions/{SESSION}/messages?limit=" + "9" * 5000, "limit"),
]


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "status", "param", "text"), POST_CASES, ids=[c[0] for c in POST_CASES]
)
def test_hostile_body_is_a_4xx_naming_the_field_and_the_server_keeps_serving(
    http: httpx.Client,
    media: Path,
    name: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    param: str | None,
    text: str,
) -> None:
    response = http.post(path, content=body.replace(b"{MEDIA}", str(media).encode()), headers=headers)
    check_error(response, status, param, text)
    still_serving(http)


@pytest.mark.parametrize(("name", "path", "param"), GET_CASES, ids=[c[0] for c in GET_CASES])
def test_hostile_query_is_a_400_naming_the_parameter(http: httpx.Client, name: str, path: str, param: str) -> None:
    session_id = http.post("/api/sessions", json={}).json()["session_id"]
    check_error(http.get(path.replace("{SESSION}", session_id)), 400, param, param)
    still_serving(http)


def test_an_oversized_body_is_refused_before_it_is_read_whole(http: httpx.Client) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}])
    check_error(http.post("/api/streaming/chat", content=body, headers=JSON), 413, "body", "larger than")
    # Chunked, with no Content-Length to refuse it by: the cap applies while reading.
    chunks = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))
    check_error(http.post("/api/streaming/chat", content=chunks, headers=JSON), 413, "body", "larger than")
    still_serving(http)


def test_the_anthropic_route_answers_hostile_input_in_anthropics_shape(http: httpx.Client) -> None:
    cases = [
        (b'{"model": "echo", "max_tokens": 5, "messages": [', "Malformed JSON"),
        (b'{"model": "echo", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]}', "max_tokens"),
        (b'{"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "bogus": 1}', "bogus"),
        (b'{"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}', "text"),
        (b'{"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{}]}', "name"),
        (
            b'{"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": "any"}',
            "tool_choice",
        ),
    ]
    for body, text in cases:
        response = http.post("/v1/messages", content=body, headers=JSON)
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "error" and text in response.json()["error"]["message"]
    allowed = http.post(
        "/v1/messages", json={"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "fine"}]}
    )
    assert allowed.status_code == 200 and allowed.json()["content"][0]["text"] == "fine"


def test_a_file_inside_media_dirs_is_read(http: httpx.Client, media: Path) -> None:
    """The control for the traversal case: the same request shape, inside the allowed directory, succeeds."""
    body = chat(messages=[{"role": "user", "content": "look", "images": [str(media / "media" / "ok.png")]}])
    reply = http.post("/api/streaming/chat", content=body, headers=JSON)
    assert reply.status_code == 200 and reply.json()["content"] == "look"


async def test_websocket_garbage_frames_get_errors_and_the_connection_keeps_working(server: str) -> None:
    url = server.replace("http://", "ws://") + "/api/streaming/ws/ws-user"
    garbage: list[tuple[str | bytes, str, str | None]] = [
        ("not json", "Malformed JSON", None),
        ("[1, 2]", "Invalid request", None),
        (nested(5000), "Malformed JSON", None),
        (b"\x00\xff\xfe binary", "Binary frames", "frame"),
        ('{"message_type": "chat_request"}', "request_id", "request_id"),
        ('{"message_type": "warp", "request_id": "w"}', "Unknown message_type", "message_type"),
        ('{"message_type": "ping", "request_id": "p", "extra": 1}', "Extra inputs", "extra"),
        ('{"message_type": "chat_request", "request_id": "c0", "data": {"messages": []}}', "at least one", "messages"),
        ("x" * 1_000_000, "Malformed JSON", None),
    ]
    async with websockets.connect(url, max_size=None) as ws:
        for frame, text, param in garbage:
            await ws.send(frame)
            message = json.loads(await ws.recv())
            if message["message_type"] == "ack":  # a chat_request is checked after its ack
                message = json.loads(await ws.recv())
            assert message["message_type"] == "error", (frame[:40], message)
            assert text in message["data"]["message"] and message["data"]["param"] == param, message
        await ws.send(json.dumps({"message_type": "ping", "request_id": "p1"}))
        assert json.loads(await ws.recv()) == {"message_type": "pong", "request_id": "p1", "data": {}}
        await ws.send(json.dumps({"message_type": "chat_request", "request_id": "c1", "data": {"messages": [HI]}}))
        text = ""
        while True:
            message = json.loads(await ws.recv())
            if message["message_type"] == "stream_event":
                event = message["data"]["event_data"]
                text += event.get("content", "") if event["type"] == "text-delta" else ""
                if event["type"] == "finish":
                    break
        assert text == "hi"
