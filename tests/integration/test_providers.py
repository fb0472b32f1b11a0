"""Providers on the Ray path: translated pools, the fallback chain, health, registration that survives a restart."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
import ray
from ray import serve

from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as client:
        yield client


def typed_events(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_openai_sdk_gets_streamed_tool_calls_from_anthropic(relay: Relay) -> None:
    client = openai.AsyncOpenAI(base_url=relay.url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="claude/fake-tools",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice="auto",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert text == "Let me check."
    assert calls[0].id == "toolu_01A" and calls[0].function and calls[0].function.name == "get_weather"
    assert "".join(c.function.arguments or "" for c in calls if c.function) == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens_details.cached_tokens == 5  # type: ignore[union-attr]
    sent = relay.anthropic.requests[-1]
    assert sent["body"]["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["body"]["tools"][0]["input_schema"] == TOOL["function"]["parameters"]  # type: ignore[index]

    follow_up = await client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [c.model_dump() for c in calls[:1]]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny"},
        ],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert follow_up.choices[0].message.content == "Tool said: sunny"


async def test_the_chain_falls_back_from_anthropic_to_openai_to_echo(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/streaming/chat", json={"provider_id": "chain", "messages": [{"role": "user", "content": "still here"}]}
    )
    assert response.status_code == 200
    events = typed_events(response.text)
    fallbacks = [e["message"] for e in events if e["type"] == "status" and e["status"] == "fallback"]
    assert len(fallbacks) == 2
    assert "chain failed (overloaded_error" in fallbacks[0] and "falling back to up" in fallbacks[0]
    assert "up failed (provider_error" in fallbacks[1] and "falling back to echo" in fallbacks[1]
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "still here"
    runs = (await http.get(f"/api/sessions/{response.headers['x-session-id']}/runs")).json()["runs"]
    assert runs[0]["status"] == "completed" and runs[0]["provider"] == "echo"


async def test_health_check_all(http: httpx.AsyncClient) -> None:
    health = (await http.get("/api/streaming/providers/health")).json()
    pools = {p["provider_id"]: p for p in health["providers"]}
    assert pools["up"]["reachable"] and pools["claude"]["reachable"] and pools["claude"]["ok"]
    assert pools["claude"]["breaker"]["state"] == "closed" and pools["claude"]["replicas"] == 1
    assert pools["claude"]["latency_ms"] >= 0
    assert not pools["mystery"]["ok"] and "telepathy" in pools["mystery"]["error"]
    assert health["status"] == "degraded"


async def test_a_registered_provider_survives_a_directory_restart(relay: Relay, http: httpx.AsyncClient) -> None:
    registration = {
        "provider_id": "claude-2",
        "provider_type": "anthropic",
        "model_name": "fake-claude",
        "base_url": relay.anthropic_url,
        "api_key": relay.anthropic.api_key,
    }
    created = await http.post("/api/streaming/providers/register", json=registration)
    assert created.status_code == 201, created.text
    assert relay.anthropic.api_key not in created.text
    listed = (await http.get("/api/streaming/providers")).json()["data"]
    assert {"provider_id": "claude-2", "registered": True}.items() <= next(
        p for p in listed if p["provider_id"] == "claude-2"
    ).items()

    # Registration deployed nothing: the shared pool serves it. Lose the directory that knew about it; the new one
    # restores it from the store.
    assert "relay-provider-claude-2" not in serve.status().applications
    directory = next(a for a in ray.util.list_named_actors(all_namespaces=True) if "SessionDirectory" in a["name"])
    ray.kill(ray.get_actor(directory["name"], namespace=directory["namespace"]), no_restart=True)
    restored = await relay.directory.list_providers.remote()
    assert "claude-2" in {p.provider_id for p in restored}

    reply = await http.post(
        "/v1/chat/completions", json={"model": "claude-2", "messages": [{"role": "user", "content": "back again"}]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "back again"

    deleted = await http.delete("/api/streaming/providers/claude-2")
    assert deleted.status_code == 200
    assert "relay-provider-claude-2" not in serve.status().applications
    assert (await http.delete("/api/streaming/providers/claude-2")).status_code == 404
    assert (await http.delete("/api/streaming/providers/claude")).status_code == 409
