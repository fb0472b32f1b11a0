"""The streaming surfaces on the Ray path: WebSocket, the Anthropic ingress, interleaved comparison."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest
import websockets

from tests.cases import WEATHER_TOOL
from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration


async def test_websocket_streams_and_cancels_through_serve(relay: Relay) -> None:
    url = relay.url.replace("http://", "ws://") + "/api/streaming/ws/wsuser"
    async with websockets.connect(url) as ws:

        async def send(message_type: str, request_id: str, **data: Any) -> None:
            await ws.send(orjson.dumps({"message_type": message_type, "request_id": request_id, "data": data}).decode())

        await send(
            "chat_request",
            "slow",
            messages=[{"role": "user", "content": "x " * 300}],
            options={"provider_options": {"tokens_per_s": 20}},
        )
        await send("chat_request", "fast", messages=[{"role": "user", "content": "through serve"}])
        finished: dict[str, str] = {}
        text: dict[str, str] = {"slow": "", "fast": ""}
        async for raw in ws:
            message = orjson.loads(raw)
            data = message["data"]
            if data.get("event_type") == "text-delta":
                text[message["request_id"]] += data["event_data"]["content"]
                if message["request_id"] == "slow" and len(text["slow"].split()) == 3:
                    await send("cancel", "slow")
            if data.get("event_type") == "finish":
                finished[message["request_id"]] = data["event_data"]["reason"]
                if len(finished) == 2:
                    break
    assert finished == {"slow": "cancelled", "fast": "stop"} and text["fast"] == "through serve"
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
