"""Surviving failures on the Ray path: killed actors mid-stream, and many concurrent sends to few sessions.

Each test records its figures; they are written to ``failure-figures.json`` in pytest's base temp
directory and printed on the terminal when the module ends.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import ray

from relay.store import open_store
from tests.integration.conftest import Relay
from tests.integration.figures import report_figures, store_name

pytestmark = pytest.mark.integration

KILLS = 20


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    collected: dict[str, Any] = {"store": store_name()}
    yield collected
    report_figures(request, tmp_path_factory, "failure", collected)


def seconds(values: list[float]) -> dict[str, float] | None:
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)} if values else None


async def test_killing_the_session_actor_mid_stream_loses_no_committed_turn(
    relay: Relay, http: httpx.AsyncClient, figures: dict[str, Any]
) -> None:
    user = {"X-User-Id": "survivor"}
    sid = (await http.post("/api/sessions", json={"name": "kill me"}, headers=user)).json()["session_id"]
    start = await relay.directory.stats.remote()
    seen_by_client: list[str] = []
    endings: list[list[str]] = []
    kill_to_error: list[float] = []
    recovery: list[float] = []
    context_tokens: list[int] = []
    for i in range(KILLS):
        slow = {
            "session_id": sid,
            # 6 s of words: a kill after the third word lands mid-run however many words a batch carries
            "provider_options": {"tokens_per_s": 10},
            "messages": [{"role": "user", "content": " ".join(f"w{i}-{k}" for k in range(60))}],
        }
        text: list[str] = []
        kinds: list[str] = []
        killed_at = 0.0
        async with http.stream("POST", "/api/streaming/chat", json=slow, headers=user) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = orjson.loads(line[6:])
                kinds.append(event["type"])
                if event["type"] == "error":
                    kill_to_error.append(time.perf_counter() - killed_at)
                if event["type"] == "text-delta":
                    text.append(event["content"])
                    if not killed_at and len("".join(text).split()) >= 3:  # words: a batch may carry several
                        actor = await relay.directory.locate.remote(sid)
                        killed_at = time.perf_counter()
                        ray.kill(actor, no_restart=True)
        endings.append(kinds[-2:])
        seen_by_client.append("".join(text))
        started = time.perf_counter()
        done = await http.post(
            "/api/streaming/chat",
            json={"session_id": sid, "stream_format": "json", "messages": [{"role": "user", "content": f"again {i}"}]},
            headers=user,
        )
        recovery.append(time.perf_counter() - started)
        assert done.status_code == 200 and done.json()["content"] == f"again {i}", done.text
        context_tokens.append(done.json()["usage"]["input_tokens"])

    store = open_store(relay.store_url)
    runs = store.runs(sid)
    interrupted = [run for run in runs if run["status"] == "interrupted"]
    history = [(m["role"], m["content"]) for m in store.messages(sid)]
    committed = [(role, content) for role, content in history if content.startswith("again")]
    expected = [(role, f"again {i}") for i in range(KILLS) for role in ("user", "assistant")]
    end = await relay.directory.stats.remote()
    activations = (await relay.directory.activations.remote([sid]))[sid]
    figures["kill_mid_stream"] = {
        "kills": KILLS,
        "error_events_seen": sum(ending == ["error", "finish"] for ending in endings),
        "recovered_turns": sum(run["status"] == "completed" for run in runs),
        # minus one: the first turn also activates from the store the session that POST /api/sessions made
        "reactivations_after_kills": end["reactivations"] - start["reactivations"] - 1,
        "interrupted_runs_keeping_partial_text": len(interrupted),
        "lost_committed_turns": sum(
            1 for i in range(KILLS) if not {("user", f"again {i}"), ("assistant", f"again {i}")} <= set(committed)
        ),
        "double_activations": max(0, activations - 1),
        "kill_to_error_event_s": seconds(kill_to_error),
        "recovery_turn_s": seconds(recovery),
        # every kill costs a process: when kills outpace the pool's refill, a recovery waits for a process start
        "actors_started": end["created"] - start["created"],
    }

    assert endings == [["error", "finish"]] * KILLS
    assert len(interrupted) == KILLS and sum(run["status"] == "completed" for run in runs) == KILLS
    assert [run["output"] for run in interrupted] == seen_by_client  # exactly the partial text the client saw
    assert all(len(output.split()) >= 3 for output in seen_by_client)
    assert committed == expected
    # Each reactivated session's context holds every message stored before the kill: the 60-word messages
    # (durable before the provider was called) and the committed "again" turns (echo counts prompt tokens).
    assert context_tokens == [60 * (i + 1) + 4 * i + 2 for i in range(KILLS)]
    assert end["reactivations"] - start["reactivations"] - 1 == KILLS and activations == 1


async def test_200_concurrent_sends_to_10_sessions_of_5_users(
    relay: Relay, http: httpx.AsyncClient, figures: dict[str, Any]
) -> None:
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

    started = time.perf_counter()
    statuses = await asyncio.gather(*(send(*s) for s in sends))
    elapsed = time.perf_counter() - started
    ids = [sid for _, sid in sessions]
    counts = await relay.directory.activations.remote(ids)
    figures["concurrent_sends"] = {
        "sends": len(sends),
        "sessions": len(sessions),
        "users": len(users),
        "ok": statuses.count(200),
        "double_activations": sum(max(0, n - 1) for n in counts.values()),
        "wall_s": round(elapsed, 2),
    }
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

    assert counts == dict.fromkeys(ids, 1)  # 0 double activations
    placements = [await actor.hosted.remote() for actor in await relay.directory.actors.remote()]
    hosted = Counter(sid for on_actor in placements for sid in on_actor if sid in ids)
    assert hosted == dict.fromkeys(ids, 1)  # and each live session is on exactly one actor
