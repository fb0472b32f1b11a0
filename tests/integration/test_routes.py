"""Routes and the response cache on the cluster: session actors balance on the pools' own counters."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration


def sse(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(block.split("data: ", 1)[1]) for block in body.strip().split("\n\n")]


async def turn(http: httpx.AsyncClient, model: str, text: str, session_id: str | None = None) -> httpx.Response:
    headers = {"X-Session-Id": session_id} if session_id else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    response = await http.post("/api/streaming/chat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def served_by(response: httpx.Response) -> str:
    return str(sse(response.text)[-1]["metrics"]["provider"])


async def test_least_busy_reads_the_pools_counters_across_processes(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as http:
        before = sum(r["body"].get("model") == "fake-hang" for r in relay.upstream.requests)
        # two streams straight to the up pool, around the route, waiting on a hanging upstream (no headers yet:
        # the ingress holds them until the first token, so they run as tasks)
        held = [asyncio.create_task(turn(http, "up/fake-hang", f"hold {i}")) for i in range(2)]
        await await_until(
            lambda: sum(r["body"].get("model") == "fake-hang" for r in relay.upstream.requests) >= before + 2,
            timeout_s=60,
            interval_s=0.05,
            what="the held streams to reach the upstream",
        )
        first = await turn(http, "duo", "who serves")
        session_id = first.headers["x-session-id"]
        rest = [await turn(http, "duo", f"who serves {i}", session_id) for i in range(3)]
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        assert [served_by(r) for r in [first, *rest]] == ["echo"] * 4  # up carries 2 streams, echo none
        health = (await http.get("/api/streaming/providers/health")).json()
    duo = next(r for r in health["routes"] if r["name"] == "duo")
    assert duo["strategy"] == "least-busy" and [p["provider"] for p in duo["pools"]] == ["up", "echo"]
    assert all(p["share"] is not None and 0 <= p["share"] <= 1 for p in duo["pools"])


async def test_a_route_falls_back_from_a_failing_pool(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as http:
        first = await turn(http, "sturdy", "a sturdy one")
        session_id = first.headers["x-session-id"]
        replies = [first, *[await turn(http, "sturdy", f"sturdy {i}", session_id) for i in range(3)]]
    assert all(served_by(r) == "echo" for r in replies)
    fallbacks = [e for r in replies for e in sse(r.text) if e["type"] == "status" and e["status"] == "fallback"]
    assert len(fallbacks) == 2  # one session, one actor: its rotation tried the failing pool every other turn
    assert all("up failed" in e["message"] for e in fallbacks)


async def test_a_cached_route_answers_a_repeat_without_the_upstream(relay: Relay) -> None:
    text = "cluster cache words"
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as http:
        miss = await turn(http, "cached", text)
        hit = await turn(http, "cached", text)
    assert (miss.headers["x-relay-cache"], hit.headers["x-relay-cache"]) == ("miss", "hit")
    assert sum(r["body"]["messages"][-1].get("content") == text for r in relay.upstream.requests) == 1
    replayed = sse(hit.text)
    assert replayed[1]["type"] == "cache-hit" and replayed[-1]["reason"] == "stop"
    assert "".join(e["content"] for e in replayed if e["type"] == "text-delta") == text + " "
