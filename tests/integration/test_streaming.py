"""The streaming surfaces on the Ray path: WebSocket, the Anthropic ingress, interleaved comparison."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import httpx
import orjson
import pytest
import websockets

from actors.ingress import RayBackend
from actors.partitions import DirectoryPartitions
from relay.config import RelaySettings
from relay.http.app import build_app
from relay.store import open_store
from tests.cases import WEATHER_TOOL
from tests.fakes.openai_upstream import ServerThread
from tests.integration.conftest import Relay
from tests.integration.sockets import cancel_one_of_two
from tests.waiting import await_until

pytestmark = pytest.mark.integration

WORDS = " ".join(f"w{i}" for i in range(80))


def ws_message(message_type: str, request_id: str, **data: Any) -> str:
    return orjson.dumps({"message_type": message_type, "request_id": request_id, "data": data}).decode()


async def ws_events(ws: Any, request_id: str, texts: int | None = None) -> list[dict[str, Any]]:
    """Stream events of ``request_id`` until its finish, or until ``texts`` text events have come."""
    events: list[dict[str, Any]] = []
    async for raw in ws:
        message = orjson.loads(raw)
        assert message["message_type"] != "error", message
        if message["request_id"] != request_id or message["message_type"] != "stream_event":
            continue
        events.append(message["data"]["event_data"])
        if events[-1]["type"] == "finish" or sum(e["type"] == "text-delta" for e in events) == texts:
            return events
    raise AssertionError("the socket closed before the stream ended")


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text-delta")


async def test_websocket_streams_and_cancels_through_serve(relay: Relay) -> None:
    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/wsuser"
    finished, fast = await cancel_one_of_two(url, "through serve")
    assert finished == {"slow": "cancelled", "fast": "stop"} and fast == "through serve"
    async with httpx.AsyncClient(base_url=relay.url) as http:
        stats = (await http.get("/api/stats")).json()
    assert stats["websocket"]["opened"] >= 1 and stats["websocket"]["messages_received"] >= 3
    echo = next(pool for pool in stats["providers"] if pool["provider_id"] == "echo")
    assert echo["requests"] >= 2 and echo["mean_ttft_ms"] is not None and echo["breaker"] == "closed"


async def test_anthropic_sdk_streams_tool_use_from_an_openai_pool(relay: Relay) -> None:
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key="unused", max_retries=0)
    async with client.messages.stream(
        model="up/fake-tools",
        max_tokens=100,
        tools=[{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = await stream.get_final_message()
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"}) and final.stop_reason == "tool_use"


async def test_interleaved_sse_through_serve(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
        response = await http.post(
            "/api/streaming/chat",
            json={
                "generator_mode": "interleaved",
                "provider_ids": ["echo", "up"],
                "messages": [{"role": "user", "content": "side by side"}],
            },
        )
    events = [orjson.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    text: dict[str, str] = {}
    for event in events:
        if event["type"] == "text-delta":
            text[event["provider"]] = text.get(event["provider"], "") + event["content"]
    assert {k: v.strip() for k, v in text.items()} == {"echo": "side by side", "up": "side by side"}


async def test_resume_through_serve_with_sse_and_websocket(relay: Relay) -> None:
    words = " ".join(f"w{i}" for i in range(80))
    owner = {"X-User-Id": "resumer"}
    body = {
        "resumable": True,
        "provider_options": {"tokens_per_s": 60},
        "messages": [{"role": "user", "content": words}],
    }
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
        seen: list[dict[str, Any]] = []
        async with http.stream("POST", "/api/streaming/chat", json=body, headers=owner) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    seen.append(orjson.loads(line[6:]))
                    if sum(e["type"] == "text-delta" for e in seen) == 5:
                        break
        run_id = seen[0]["run_id"]
        before = "".join(e["content"] for e in seen if e["type"] == "text-delta")
        async with http.stream(
            "GET", f"/api/streaming/runs/{run_id}/events", headers=owner | {"Last-Event-ID": str(seen[-1]["id"])}
        ) as response:
            rest = [orjson.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]
    assert rest[0]["id"] == seen[-1]["id"] + 1 and rest[-1]["type"] == "finish"
    assert before + "".join(e["content"] for e in rest if e["type"] == "text-delta") == words

    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/resumer"
    async with websockets.connect(url) as ws:
        await ws.send(
            orjson.dumps({"message_type": "resume", "request_id": "r", "data": {"run_id": run_id, "after": 3}}).decode()
        )
        replayed = []
        async for raw in ws:
            message = orjson.loads(raw)
            if message["message_type"] == "stream_event":
                replayed.append(message["data"]["event_data"])
                if message["data"]["event_type"] == "finish":
                    break
    assert replayed[0]["id"] == 4 and "".join(e["content"] for e in replayed if e["type"] == "text-delta") in words
    assert words.endswith("".join(e["content"] for e in replayed if e["type"] == "text-delta"))


async def test_a_dropped_websocket_resumes_the_live_run_through_serve(relay: Relay) -> None:
    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/wsresumer"
    slow = {"provider_options": {"tokens_per_s": 60}}
    async with websockets.connect(url) as ws:
        await ws.send(ws_message("chat_request", "r", messages=[{"role": "user", "content": WORDS}], options=slow))
        seen = await ws_events(ws, "r", texts=5)
        ws.transport.abort()  # the connection dies without a close frame
    run_id = seen[0]["run_id"]
    assert open_store(relay.store_url).get_run(run_id)["status"] == "running"  # type: ignore[index]
    async with websockets.connect(url) as ws:
        await ws.send(ws_message("resume", "again", run_id=run_id, after=seen[-1]["id"]))
        rest = await ws_events(ws, "again")
    assert [e["id"] for e in rest] == list(range(seen[-1]["id"] + 1, seen[-1]["id"] + 1 + len(rest)))
    assert text(seen) + text(rest) == WORDS and rest[-1]["reason"] == "stop"


async def test_a_websocket_cancel_reaches_the_upstream_through_serve(relay: Relay) -> None:
    marker = "serve-cancel-probe"
    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/canceller"
    async with websockets.connect(url) as ws:
        await ws.send(
            ws_message(
                "chat_request",
                "hang",
                provider_id="up",
                messages=[{"role": "user", "content": marker}],
                options={"model": "fake-hang"},
            )
        )
        requests = relay.upstream.requests
        record = await await_until(
            lambda: next((r for r in requests if marker in str((r["body"] or {}).get("messages"))), None),
            timeout_s=30,
            what="the request to reach the upstream",
        )
        assert not record["disconnected"].is_set()
        sent = time.monotonic()
        await ws.send(ws_message("cancel", "hang"))
        finish = (await ws_events(ws, "hang"))[-1]
        assert await asyncio.to_thread(record["disconnected"].wait, 5.0)
    assert finish["reason"] == "cancelled"
    print(f"through Serve the upstream saw the cancel after {(record['disconnected_at'] - sent) * 1000:.1f} ms")


async def test_resume_lands_on_another_ingress(relay: Relay) -> None:
    """A second ingress, in this process, over the same directory and store: it finds the run on its actor."""
    other = RayBackend(RelaySettings(store_url=relay.store_url), DirectoryPartitions([relay.directory]))
    owner = {"X-User-Id": "hopper"}
    body = {
        "resumable": True,
        "provider_options": {"tokens_per_s": 60},
        "messages": [{"role": "user", "content": WORDS}],
    }
    with ServerThread(build_app(other)) as second:
        async with httpx.AsyncClient(base_url=relay.url, timeout=60, headers=owner) as http:
            seen: list[dict[str, Any]] = []
            async with http.stream("POST", "/api/streaming/chat", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        seen.append(orjson.loads(line[6:]))
                        if sum(e["type"] == "text-delta" for e in seen) == 5:
                            break
            run_id = seen[0]["run_id"]
            assert other.store.get_run(run_id)["status"] == "running"  # type: ignore[index]
            async with (
                httpx.AsyncClient(base_url=second.url, timeout=60, headers=owner) as elsewhere,
                elsewhere.stream(
                    "GET", f"/api/streaming/runs/{run_id}/events", headers={"Last-Event-ID": str(seen[-1]["id"])}
                ) as response,
            ):
                assert response.status_code == 200
                rest = [orjson.loads(line[6:]) async for line in response.aiter_lines() if line.startswith("data: ")]
    assert rest[0]["id"] == seen[-1]["id"] + 1 and rest[-1]["type"] == "finish" and rest[-1]["reason"] == "stop"
    assert text(seen) + text(rest) == WORDS
