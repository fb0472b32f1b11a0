"""The whole path on a local Ray cluster: Serve proxy, ingress, directory, session actors, pools."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import orjson
import pytest
import ray

from tests.cases import BAD_INPUT, check_error
from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as client:
        yield client


async def history(http: httpx.AsyncClient, sid: str, user_id: str | None = None) -> list[tuple[str, str]]:
    headers = {"X-User-Id": user_id} if user_id else {}
    messages = (await http.get(f"/api/sessions/{sid}/messages", headers=headers)).json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


async def runs(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    return (await http.get(f"/api/sessions/{sid}/runs")).json()["runs"]


async def test_openai_sdk_streams_and_completes(relay: Relay) -> None:
    client = openai.AsyncOpenAI(api_key="unused", base_url=relay.url + "/v1", max_retries=0)
    stream = await client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "ray serve streams this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ray serve streams this"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    completion = await client.chat.completions.create(model="up", messages=[{"role": "user", "content": "via sdk"}])
    assert completion.choices[0].message.content == "via sdk "
    assert completion.usage is not None and completion.usage.prompt_tokens == 7


async def test_session_continuity_through_the_header(http: httpx.AsyncClient) -> None:
    first = await http.post("/v1/chat/completions", json={"model": "echo", **user("first")})
    sid = first.headers["x-session-id"]
    second = await http.post(
        "/v1/chat/completions", headers={"X-Session-Id": sid}, json={"model": "echo", **user("second")}
    )
    assert second.headers["x-session-id"] == sid
    # echo counts prompt tokens: the server prepended the stored history
    assert second.json()["usage"]["prompt_tokens"] == 3
    assert await history(http, sid) == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second"),
        ("assistant", "second"),
    ]


async def test_concurrent_sends_to_one_session_run_in_order(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/api/streaming/chat", json={**user("start"), "stream_format": "json"})).headers[
        "x-session-id"
    ]
    slow = {"provider_options": {"tokens_per_s": 40}, "stream_format": "json"}
    texts = [f"turn {i} a b c d" for i in range(3)]
    replies = await asyncio.gather(
        *[http.post("/api/streaming/chat", headers={"X-Session-Id": sid}, json={**user(t), **slow}) for t in texts]
    )
    assert all(r.status_code == 200 for r in replies)
    turns = (await history(http, sid))[2:]
    assert [role for role, _ in turns] == ["user", "assistant"] * 3  # never interleaved
    for i in range(0, 6, 2):
        assert turns[i][1] == turns[i + 1][1]
    assert sorted(turns[i][1] for i in range(0, 6, 2)) == texts


async def test_disconnect_cancels_the_run_and_marks_it_cancelled(relay: Relay, http: httpx.AsyncClient) -> None:
    body = {**user("a b c d e f"), "provider_options": {"fault": "hang", "fault_after": 2}, "stream_format": "ndjson"}
    async with http.stream("POST", "/api/streaming/chat", json=body) as response:
        sid = response.headers["x-session-id"]
        lines = response.aiter_lines()
        opening = orjson.loads(await anext(lines))
        assert opening["type"] == "status" and opening["status"] == "started" and opening["run_id"]
        first = orjson.loads(await anext(lines))
        assert first["type"] == "text-delta"
    # The next turn waits for the session's turn lock, so it only completes once the
    # cancelled run has been stored: no sleep needed, and a leak would hang here.
    follow = await http.post(
        "/api/streaming/chat", headers={"X-Session-Id": sid}, json={**user("after"), "stream_format": "json"}
    )
    assert follow.json()["content"] == "after"
    cancelled, completed = await runs(http, sid)
    assert cancelled["status"] == "cancelled" and cancelled["output"] == "a b "
    assert completed["status"] == "completed"


async def test_passivation_then_reactivation_keeps_history(relay: Relay, http: httpx.AsyncClient) -> None:
    first = await http.post(
        "/api/streaming/chat", headers={"X-User-Id": "pat"}, json={**user("remember me"), "stream_format": "json"}
    )
    sid = first.headers["x-session-id"]
    before = await relay.directory.stats.remote()
    passivated = await relay.directory.passivate_idle.remote(0.0)
    assert sid in passivated
    after = await relay.directory.stats.remote()
    assert after["live"] == before["live"] - len(passivated)
    assert after["pooled"] >= 1  # the actor was recycled into the warm pool, not killed
    again = await http.post(
        "/api/streaming/chat",
        headers={"X-User-Id": "pat", "X-Session-Id": sid},
        json={**user("again"), "stream_format": "json"},
    )
    assert again.json()["usage"]["input_tokens"] == 5  # "remember me" twice + "again"
    assert (await relay.directory.stats.remote())["reactivations"] == before["reactivations"] + 1
    assert await history(http, sid, "pat") == [
        ("user", "remember me"),
        ("assistant", "remember me"),
        ("user", "again"),
        ("assistant", "again"),
    ]


async def test_a_dead_session_actor_is_replaced_from_the_store(relay: Relay, http: httpx.AsyncClient) -> None:
    sid = (await http.post("/api/streaming/chat", json={**user("alive"), "stream_format": "json"})).headers[
        "x-session-id"
    ]
    _, actor = await relay.directory.activate.remote(sid, "anonymous")
    ray.kill(actor)
    reply = await http.post(
        "/api/streaming/chat", headers={"X-Session-Id": sid}, json={**user("still here"), "stream_format": "json"}
    )
    assert reply.status_code == 200 and reply.json()["content"] == "still here"
    assert [text for _, text in await history(http, sid)] == ["alive", "alive", "still here", "still here"]


async def test_other_users_cannot_reach_a_session(http: httpx.AsyncClient) -> None:
    sid = (
        await http.post(
            "/api/streaming/chat", headers={"X-User-Id": "ann"}, json={**user("mine"), "stream_format": "json"}
        )
    ).headers["x-session-id"]
    check_error(
        await http.get(f"/api/sessions/{sid}/messages", headers={"X-User-Id": "ben"}), 404, "session_id", "not found"
    )
    check_error(
        await http.post(
            "/api/streaming/chat", headers={"X-User-Id": "ben", "X-Session-Id": sid}, json=user("let me in")
        ),
        404,
        "session_id",
        "not found",
    )


async def test_typed_sse_ends_with_exactly_one_finish(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/streaming/chat", json={**user("typed events here"), "provider_id": "up"})
    blocks = [dict(line.split(": ", 1) for line in block.splitlines()) for block in response.text.strip().split("\n\n")]
    types = [block["event"] for block in blocks]
    assert types.count("finish") == 1 and types[-1] == "finish"
    assert "".join(orjson.loads(b["data"])["content"] for b in blocks if b["event"] == "text-delta") == (
        "typed events here "
    )


async def test_runtime_registration_serves_a_new_pool(relay: Relay, http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/api/streaming/providers/register",
        json={
            "provider_id": "late",
            "provider_type": "openai_compatible",
            "model_name": "fake",
            "base_url": relay.upstream_url,
            "api_key": "sk-late-secret",
        },
    )
    assert created.status_code == 201 and "sk-late-secret" not in created.text
    # a shared provider: every session actor already holds the shared pool's handle, so no first turn waits for one
    actors = await relay.directory.actors.remote()
    pools = await asyncio.gather(*(actor.pools.remote() for actor in actors))
    assert actors and all("pool-shared" in held and "pool-late" not in held for held in pools)
    reply = await http.post("/v1/chat/completions", json={"model": "late", **user("registered")})
    assert reply.json()["choices"][0]["message"]["content"] == "registered "
    assert relay.upstream.requests[-1]["headers"]["authorization"] == "Bearer sk-late-secret"
    stats = (await http.get("/api/stats")).json()
    assert {"echo", "up", "late"} <= {p["provider_id"] for p in stats["providers"]}
    assert "sk-late-secret" not in str(stats)
    duplicate = await http.post(
        "/api/streaming/providers/register", json={"provider_id": "late", "provider_type": "echo"}
    )
    check_error(duplicate, 409, "provider_id", "already registered")


async def test_a_provider_without_an_adapter_deploys_and_answers_clearly(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json={"model": "mystery", **user("hello")})
    check_error(response, 400, "provider_type", "unknown provider_type 'telepathy'")
    assert "mystery" in response.json()["error"]["message"] and "x-session-id" not in response.headers


@pytest.mark.parametrize(("name", "path", "body", "status", "param", "text"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_input(
    http: httpx.AsyncClient, name: str, path: str, body: bytes, status: int, param: str | None, text: str
) -> None:
    response = await http.post(path, content=body, headers={"content-type": "application/json"})
    check_error(response, status, param, text)
    assert (await http.get("/healthz")).status_code == 200


async def test_deleting_a_live_session_evicts_it_everywhere(relay: Relay, http: httpx.AsyncClient) -> None:
    owner = {"X-User-Id": "deleter"}
    reply = await http.post("/v1/chat/completions", json={"model": "echo", **user("keep me")}, headers=owner)
    sid = reply.headers["x-session-id"]
    assert await relay.directory.locate.remote(sid) is not None
    assert (await http.delete(f"/api/sessions/{sid}", headers={"X-User-Id": "intruder"})).status_code == 404
    assert (await http.delete(f"/api/sessions/{sid}", headers=owner)).status_code == 204
    assert await relay.directory.locate.remote(sid) is None
    assert (await http.get(f"/api/sessions/{sid}", headers=owner)).status_code == 404
    assert (await http.get(f"/api/sessions/{sid}/messages", headers=owner)).status_code == 404
