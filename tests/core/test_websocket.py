"""The WebSocket protocol with a real ``websockets`` client, in-process under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from relay.app import build_app
from relay.config import ProviderConfig, RelaySettings
from relay.local import LocalBackend
from tests.fakes.openai_upstream import ServerThread


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("ws")) / "relay.db"
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
        ProviderConfig(provider_id="echo-2", provider_type="echo", options={"repeat": 2}),
    ]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


@pytest.fixture(scope="module")
def url(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as server:
        yield server.url.replace("http://", "ws://")


async def send(ws: Any, message_type: str, request_id: str | None = None, **data: Any) -> None:
    await ws.send(orjson.dumps({"message_type": message_type, "request_id": request_id, "data": data}).decode())


async def until_finish(ws: Any, request_id: str) -> list[dict[str, Any]]:
    """Every message for ``request_id`` up to its finish (or error)."""
    seen = []
    async for raw in ws:
        message = orjson.loads(raw)
        if message["request_id"] != request_id:
            continue
        seen.append(message)
        if message["message_type"] == "error" or message["data"].get("event_type") == "finish":
            return seen
    return seen


def text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"]["event_data"]["content"] for m in messages if m["data"].get("event_type") == "text-delta")


async def test_chat_ping_and_the_seed_event_shape(url: str, backend: LocalBackend) -> None:
    async with websockets.connect(f"{url}/api/streaming/ws/ann") as ws:
        await send(ws, "ping", "p1")
        assert orjson.loads(await ws.recv()) == {"message_type": "pong", "request_id": "p1", "data": {}}
        await send(ws, "chat_request", "r1", messages=[{"role": "user", "content": "hello socket"}])
        messages = await until_finish(ws, "r1")
    assert [m["message_type"] for m in messages[:2]] == ["ack", "ack"]
    session_id = messages[1]["data"]["session_id"]
    assert text(messages) == "hello socket" and messages[-1]["data"]["event_data"]["reason"] == "stop"
    assert backend.store.get_session(session_id)["user_id"] == "ann"  # type: ignore[index]


async def test_two_requests_in_flight_and_a_cancel(url: str, backend: LocalBackend) -> None:
    slow = {"provider_options": {"tokens_per_s": 20}}
    async with websockets.connect(f"{url}/api/streaming/ws/bea") as ws:
        await send(
            ws, "chat_request", "long", messages=[{"role": "user", "content": " ".join(["w"] * 200)}], options=slow
        )
        await send(ws, "chat_request", "short", messages=[{"role": "user", "content": "quick one"}])
        finished: dict[str, dict[str, Any]] = {}
        long_text: list[str] = []
        session_id = None
        async for raw in ws:
            message = orjson.loads(raw)
            data = message["data"]
            if message["request_id"] == "long" and data.get("status") == "started":
                session_id = data["session_id"]
            if message["request_id"] == "long" and data.get("event_type") == "text-delta":
                long_text.append(data["event_data"]["content"])
                if len(long_text) == 3:
                    await send(ws, "cancel", "long")
            if data.get("event_type") == "finish":
                finished[message["request_id"]] = data["event_data"]
                if len(finished) == 2:
                    break
    assert finished["short"]["reason"] == "stop" and finished["long"]["reason"] == "cancelled"
    assert session_id is not None
    [run] = backend.store.runs(session_id)
    assert run["status"] == "cancelled" and 3 <= len(run["output"].split()) < 200


async def test_feedback_interleaved_and_errors(url: str, backend: LocalBackend) -> None:
    async with websockets.connect(f"{url}/api/streaming/ws/cy") as ws:
        await send(
            ws,
            "chat_request",
            "both",
            messages=[{"role": "user", "content": "compare"}],
            generator_mode="interleaved",
            options={"provider_ids": ["echo", "echo-2"]},
        )
        messages = await until_finish(ws, "both")
        messages += await until_finish(ws, "both")
        by_provider: dict[str, str] = {}
        for m in messages:
            if m["data"].get("event_type") == "text-delta":
                event = m["data"]["event_data"]
                by_provider[event["provider"]] = by_provider.get(event["provider"], "") + event["content"]
        assert by_provider == {"echo": "compare", "echo-2": "compare compare"}
        run_id = next(m["data"]["event_data"]["run_id"] for m in messages if m["data"].get("event_type") == "finish")

        await send(ws, "feedback", "f1", run_id=run_id, rating=5, comment="useful")
        assert orjson.loads(await ws.recv())["data"] == {"status": "stored", "run_id": run_id}
        assert backend.store.get_run(run_id)["feedback"] == {"rating": 5, "comment": "useful"}  # type: ignore[index]

        for message, param in [
            ({"message_type": "teleport"}, "message_type"),
            ({"message_type": "chat_request", "request_id": "x", "data": {"messages": []}}, "messages"),
            ({"message_type": "feedback", "request_id": "y", "data": {"run_id": run_id, "rating": 9}}, "rating"),
        ]:
            await ws.send(orjson.dumps(message).decode())
            reply = orjson.loads(await ws.recv())
            while reply["message_type"] == "ack":
                reply = orjson.loads(await ws.recv())
            assert reply["message_type"] == "error" and reply["data"]["param"] == param, reply
        await send(ws, "ping", "still-alive")
        assert orjson.loads(await ws.recv())["message_type"] == "pong"

    async with websockets.connect(f"{url}/api/streaming/ws/mallory") as ws:
        await send(ws, "feedback", "f2", run_id=run_id, rating=-1)
        assert orjson.loads(await ws.recv())["data"]["type"] == "not_found_error"


async def test_the_path_user_must_match_the_caller(url: str) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{url}/api/streaming/ws/ann", additional_headers={"X-User-Id": "eve"}):
            pass
