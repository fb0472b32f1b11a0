"""Surviving failures on the Ray path: killed actors mid-stream, and many concurrent sends to few sessions."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
import ray

from relay.store import open_store
from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration

KILLS = 20


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as client:
        yield client


async def test_killing_the_session_actor_mid_stream_loses_no_committed_turn(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    user = {"X-User-Id": "survivor"}
    sid = (await http.post("/api/sessions", json={"name": "kill me"}, headers=user)).json()["session_id"]
    seen_by_client: list[str] = []
    for i in range(KILLS):
        slow = {
            "session_id": sid,
            "provider_options": {"tokens_per_s": 40},
            "messages": [{"role": "user", "content": " ".join(f"w{i}-{k}" for k in range(60))}],
        }
        text: list[str] = []
        kinds: list[str] = []
        async with http.stream("POST", "/api/streaming/chat", json=slow, headers=user) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = orjson.loads(line[6:])
                kinds.append(event["type"])
                if event["type"] == "text-delta":
                    text.append(event["content"])
                    if len(text) == 3:
                        actor = await relay.directory.locate.remote(sid)
                        ray.kill(actor, no_restart=True)
        assert kinds[-2:] == ["error", "finish"], kinds
        seen_by_client.append("".join(text))
        done = await http.post(
            "/api/streaming/chat",
            json={"session_id": sid, "stream_format": "json", "messages": [{"role": "user", "content": f"again {i}"}]},
            headers=user,
        )
        assert done.status_code == 200 and done.json()["content"] == f"again {i}"

    store = open_store(relay.store_url)
    runs = store.runs(sid)
    interrupted = [run for run in runs if run["status"] == "interrupted"]
    assert len(interrupted) == KILLS and sum(run["status"] == "completed" for run in runs) == KILLS
    assert [run["output"] for run in interrupted] == seen_by_client  # exactly the partial text the client saw
    assert all(len(output.split()) >= 3 for output in seen_by_client)
    history = [(m["role"], m["content"]) for m in store.messages(sid)]
    committed = [(role, content) for role, content in history if content.startswith("again")]
    assert committed == [(role, f"again {i}") for i in range(KILLS) for role in ("user", "assistant")]


async def test_200_concurrent_sends_to_10_sessions_of_5_users(relay: Relay, http: httpx.AsyncClient) -> None:
    users = [f"crowd-{u}" for u in range(5)]
    sessions = [
        (user, (await http.post("/api/sessions", json={}, headers={"X-User-Id": user})).json()["session_id"])
        for user in users
        for _ in range(2)
    ]
    sends = [(user, sid, k) for k in range(20) for user, sid in sessions]

    async def send(user: str, sid: str, k: int) -> int:
        response = await http.post(
            "/api/streaming/chat",
            json={"session_id": sid, "stream_format": "json", "messages": [{"role": "user", "content": f"{sid}#{k}"}]},
            headers={"X-User-Id": user},
        )
        return response.status_code

    statuses = await asyncio.gather(*(send(*s) for s in sends))
    assert Counter(statuses) == {200: 200}

    store = open_store(relay.store_url)
    for user, sid in sessions:
        history = [m["content"] for m in store.messages(sid)]
        assert len(history) == 40
        assert all(content.startswith(f"{sid}#") for content in history)  # nobody else's data in it
        assert history[0::2] == history[1::2]  # each reply directly follows its own message: no interleaving
        assert sorted(int(c.split("#")[1]) for c in history[0::2]) == list(range(20))
        other = next(u for u in users if u != user)
        leak = await http.get(f"/api/sessions/{sid}/messages", headers={"X-User-Id": other})
        assert leak.status_code == 404

    ids = [sid for _, sid in sessions]
    counts = await relay.directory.activations.remote(ids)
    assert counts == dict.fromkeys(ids, 1)  # 0 double activations
    placements = [await actor.hosted.remote() for actor in await relay.directory.actors.remote()]
    hosted = Counter(sid for on_actor in placements for sid in on_actor if sid in ids)
    assert hosted == dict.fromkeys(ids, 1)  # and each live session is on exactly one actor
