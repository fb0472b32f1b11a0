"""Hostile input through Ray Serve: the proxy and the ingress replica answer 4xx, and the app keeps serving."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest
import websockets

from relay.http.io import MAX_BODY_BYTES, MAX_DEPTH
from tests.cases import check_error
from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration

HI = {"role": "user", "content": "hi"}
JSON = {"content-type": "application/json"}


def chat(**fields: object) -> bytes:
    return orjson.dumps({"messages": [HI], "stream_format": "json"} | fields)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


CASES: list[tuple[str, bytes, dict[str, str], int, str | None, str]] = [
    ("truncated-json", chat()[:-5], JSON, 400, None, "Malformed JSON"),
    ("invalid-utf8", chat()[:-30] + b"\xff" + chat()[-30:], JSON, 400, None, "UTF-8"),
    (
        "too-deep",
        chat()[:-1] + f', "provider_options": {{"x": {nested(MAX_DEPTH)}}}}}'.encode(),
        JSON,
        400,
        "body",
        "deeper",
    ),
    ("wrong-content-type", chat(), {"content-type": "text/plain"}, 415, "Content-Type", "application/json"),
    ("unknown-field", chat(tempreture=1), JSON, 400, "tempreture", "Unknown field"),
    ("negative-max-tokens", chat(max_tokens=-3), JSON, 400, "max_tokens", "greater than"),
    ("huge-max-tokens", chat(max_tokens=10**12), JSON, 400, "max_tokens", "less than"),
    (
        "bad-base64",
        chat(messages=[{"role": "user", "content": "x", "images": ["data:image/png;base64,@@"]}]),
        JSON,
        400,
        "messages[0].images[0]",
        "base64",
    ),
    (
        "path-traversal",
        chat(messages=[{"role": "user", "content": "x", "images": ["../../etc/passwd"]}]),
        JSON,
        400,
        "messages[0].images[0]",
        "not accepted",
    ),
]


def served(http: httpx.Client) -> None:
    reply = http.post("/api/streaming/chat", json={"messages": [HI], "stream_format": "json"})
    assert reply.status_code == 200 and reply.json()["content"] == "hi"


@pytest.mark.parametrize(("name", "body", "headers", "status", "param", "text"), CASES, ids=[c[0] for c in CASES])
def test_hostile_body_through_serve(
    relay: Relay, name: str, body: bytes, headers: dict[str, str], status: int, param: str | None, text: str
) -> None:
    with httpx.Client(base_url=relay.url, timeout=60) as http:
        check_error(http.post("/api/streaming/chat", content=body, headers=headers), status, param, text)
        served(http)


def test_an_oversized_body_through_serve_is_a_413(relay: Relay) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}])
    with httpx.Client(base_url=relay.url, timeout=120) as http:
        check_error(http.post("/api/streaming/chat", content=body, headers=JSON), 413, "body", "larger than")
        served(http)


def test_readiness_and_the_spec_through_serve(relay: Relay) -> None:
    with httpx.Client(base_url=relay.url, timeout=60) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        pools = {pool["provider_id"]: pool for pool in ready.json()["pools"]}
        assert {"echo", "up", "claude", "chain", "mystery"} <= set(pools)
        assert all(pool["replicas"] >= 1 for pool in pools.values())
        assert http.get("/healthz").json() == {"status": "ok"}
        spec = http.get("/openapi.json").json()
        assert {"/v1/chat/completions", "/api/streaming/chat", "/readyz", "/openapi.json"} <= set(spec["paths"])


async def test_websocket_garbage_frames_through_serve(relay: Relay) -> None:
    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/hostile-ws"
    async with websockets.connect(url) as ws:
        for frame, text in [
            ("{not json", "Malformed JSON"),
            (b"\x89PNG binary", "Binary frames"),
            ('{"message_type": "teleport", "request_id": "t"}', "Unknown message_type"),
            (nested(3000), "Malformed JSON"),
        ]:
            await ws.send(frame)
            message = json.loads(await ws.recv())
            assert message["message_type"] == "error" and text in message["data"]["message"], message
        await ws.send(json.dumps({"message_type": "ping", "request_id": "p"}))
        assert json.loads(await ws.recv())["message_type"] == "pong"
        await ws.send(json.dumps({"message_type": "chat_request", "request_id": "c", "data": {"messages": [HI]}}))
        text = ""
        while True:
            message = json.loads(await ws.recv())
            if message["message_type"] == "stream_event":
                event = message["data"]["event_data"]
                if event["type"] == "text-delta":
                    text += event["content"]
                if event["type"] == "finish":
                    break
        assert text == "hi"
