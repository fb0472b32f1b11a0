"""Server-side tools on the cluster: the session actor runs the tool, and the provider gets the result."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
import websockets

from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration


def sse(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(block.split("data: ", 1)[1]) for block in body.strip().split("\n\n")]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text-delta")


def upstream_bodies(relay: Relay, marker: str) -> list[dict[str, Any]]:
    return [r["body"] for r in relay.upstream.requests if marker in orjson.dumps(r["body"]["messages"][0]).decode()]


async def test_the_session_actor_runs_the_tool_and_the_provider_gets_its_result(relay: Relay) -> None:
    question = '{"expression": "(1 + 2) * 111"}'
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as http:
        response = await http.post(
            "/api/streaming/chat",
            json={
                "model": "up/fake-call-calculator",
                "messages": [{"role": "user", "content": question}],
                "relay_tools": ["calculator"],
            },
        )
        events = sse(response.text)
        end = next(e for e in events if e["type"] == "tool-execution-end")
        assert end["result"] == "333" and end["name"] == "calculator"
        assert text(events) == "Tool said: 333" and events[-1]["reason"] == "stop"
        first, second = upstream_bodies(relay, "(1 + 2) * 111")
        assert first["tools"][0]["function"]["name"] == "calculator"
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1_0", "content": "333"}
        session_id = response.headers["x-session-id"]
        runs = (await http.get(f"/api/sessions/{session_id}/runs")).json()["runs"]
        assert runs[0]["tool_calls"][0]["execution"]["result"] == "333"


async def test_a_failing_tool_leaves_the_actor_serving(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as http:
        failed = await http.post(
            "/api/streaming/chat",
            json={
                "model": "up/fake-call-calculator",
                "relay_tools": ["calculator"],
                "messages": [{"role": "user", "content": '{"expression": "1 / 0"}'}],
            },
        )
        events = sse(failed.text)
        assert next(e for e in events if e["type"] == "tool-execution-end")["error"] == (
            "ZeroDivisionError: division by zero"
        )
        assert text(events) == "Tool said: Error: ZeroDivisionError: division by zero"
        again = await http.post(  # same session, same actor: it serves on, with a valid history
            "/api/streaming/chat",
            headers={"X-Session-Id": failed.headers["x-session-id"]},
            json={"model": "up/fake", "messages": [{"role": "user", "content": "still here"}]},
        )
        assert text(sse(again.text)) == "still here "


async def test_the_websocket_and_the_openai_stream_carry_the_tool_events(relay: Relay) -> None:
    url = relay.url.replace("http://", "ws://")
    async with websockets.connect(f"{url}/api/streaming/ws/tina") as ws:
        request = {
            "messages": [{"role": "user", "content": '{"timezone": "UTC"}'}],
            "options": {"model": "up/fake-call-current_time", "relay_tools": ["current_time"]},
        }
        await ws.send(orjson.dumps({"message_type": "chat_request", "request_id": "t1", "data": request}).decode())
        kinds = []
        async for raw in ws:
            data = orjson.loads(raw)["data"]
            if "event_type" in data:
                kinds.append(data["event_type"])
                if data["event_type"] == "tool-execution-end":
                    assert data["event_data"]["result"].endswith("+00:00")
                if data["event_type"] == "finish":
                    break
    assert kinds.index("tool-call-start") < kinds.index("tool-execution-start") < kinds.index("tool-execution-end")

    client = openai.AsyncOpenAI(api_key="unused", base_url=relay.url + "/v1", max_retries=0)
    stream = await client.chat.completions.create(
        model="up/fake-call-calculator",
        messages=[{"role": "user", "content": '{"expression": "2 ** 8"}'}],
        stream=True,
        extra_body={"relay_tools": ["calculator"], "relay_events": True},
    )
    chunks = [chunk async for chunk in stream]
    relayed = [(c.model_extra or {}).get("relay_event") for c in chunks]
    assert [e["result"] for e in relayed if e and e["type"] == "tool-execution-end"] == ["256"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Tool said: 256"
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
