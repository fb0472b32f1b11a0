"""Budgets over HTTP: two ingress apps sharing ONE limiter stand in for two replicas sharing the cluster's actor.

Requests go through the real app (``httpx.ASGITransport``: the app, its middleware and its streams run to the end
before the response returns, so each run is settled before the next request). Costs are whole dollars
(``tests.fakes.priced``): "hello there" costs $6 on echo, and its worst case is $17.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from relay.cli import main
from relay.spend import Budget, period_bounds
from tests.fakes.openai_upstream import ServerThread
from tests.fakes.priced import HELLO, Replicas, replicas
from tests.waiting import await_until


def client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay", headers=headers)


def chat(provider: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"provider_id": provider, "messages": HELLO, "stream_format": "ndjson"} | extra


def events(response: httpx.Response) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in response.text.splitlines() if line]


def warnings(response: httpx.Response) -> list[str]:
    return [event["code"] for event in events(response) if event["type"] == "warning"]


def create_key(store_url: str, user: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(the key, its id), through ``relay keys create``."""
    assert main(["keys", "create", "--user", user, "--store-url", store_url, *extra]) == 0
    out, err = capsys.readouterr()
    return out.strip(), err.split(":")[0]


def seconds_to_midnight(group: Replicas) -> int:
    _, end = period_bounds("day", group.clock.now)
    assert end is not None
    return max(1, round(end - group.clock.now))


async def test_a_key_budget_refuses_at_its_limit_across_two_replicas_and_resets_the_next_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = replicas(tmp_path)
    url = group.settings.store_url
    key, key_id = create_key(url, "ann", "--budget-usd", "30", "--budget-period", "day", capsys=capsys)
    other, _ = create_key(url, "ann", capsys=capsys)  # the same user, a key without a budget
    a, b = (client(app, Authorization=f"Bearer {key}") for app in group.apps)
    async with a, b:
        first = await a.post("/api/streaming/chat", json=chat())
        assert first.status_code == 200 and first.headers["x-relay-budget-remaining"] == "13.000000"  # 30 - 17 held
        assert warnings(first) == []
        second = await b.post("/api/streaming/chat", json=chat())  # 6 spent + 17 held: 77 %
        assert second.status_code == 200 and warnings(second) == []
        third = await a.post("/api/streaming/chat", json=chat())  # 12 spent + 17 held: 97 %
        assert warnings(third) == ["budget_warning"] and third.headers["x-relay-budget-remaining"] == "1.000000"
        warning = next(event for event in events(third) if event["type"] == "warning")
        assert f"key {key_id} budget of $30.00 per day is 97% used" in warning["message"]
        # 18 spent: 12 left, less than the worst case of the next one, on either replica
        refused = await b.post("/api/streaming/chat", json=chat(), headers={"X-Session-Id": "never-written"})
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["type"] == "budget_exceeded"
        assert f"key {key_id} budget of $30.00 per day has $12.0000 left" in error["message"]
        assert int(refused.headers["retry-after"]) == seconds_to_midnight(group)
        assert group.store.get_session("never-written") is None  # refused before any session write
        assert (await a.post("/api/streaming/chat", json=chat())).status_code == 429
        unbudgeted = await b.post("/api/streaming/chat", json=chat(), headers={"Authorization": f"Bearer {other}"})
        assert unbudgeted.status_code == 200  # a key's budget is that key's
        group.clock.now = period_bounds("day", group.clock.now)[1] or 0.0  # midnight UTC
        assert (await b.post("/api/streaming/chat", json=chat())).status_code == 200
    ran = group.store.run_costs(0, math.inf)
    assert [row["cost_usd"] for row in ran if row["key_id"] == key_id] == [6.0] * 4
    assert group.store.spent("key", key_id, 0) == 24.0


async def test_user_and_provider_budgets_refuse_at_their_limits_on_either_replica(tmp_path: Path) -> None:
    group = replicas(
        tmp_path,
        limits={"users": {"ann": {"budget_usd": 20, "budget_period": "week"}}},
        providers=[
            {"provider_id": "echo", "provider_type": "echo", "model": "echo", "default_max_tokens": 5},
            {
                "provider_id": "priced",
                "provider_type": "echo",
                "model": "p-1",
                "default_max_tokens": 5,
                "budget_usd": 30,
            },
        ],
    )
    a, b = client(group.apps[0]), client(group.apps[1])
    async with a, b:
        assert (await a.post("/api/streaming/chat", json=chat(), headers={"X-User-Id": "ann"})).status_code == 200
        refused = await b.post("/api/streaming/chat", json=chat(), headers={"X-User-Id": "ann"})
        assert refused.status_code == 429
        assert "user ann budget of $20.00 per week has $14.0000 left" in refused.json()["error"]["message"]
        week_end = period_bounds("week", group.clock.now)[1] or 0.0
        assert int(refused.headers["retry-after"]) == max(1, round(week_end - group.clock.now))
        assert (await b.post("/api/streaming/chat", json=chat(), headers={"X-User-Id": "bob"})).status_code == 200
        # the provider's budget counts every user: $8 a run, $26 worst case, $30 a month
        bob, cy = {"X-User-Id": "bob"}, {"X-User-Id": "cy"}
        assert (await a.post("/api/streaming/chat", json=chat("priced"), headers=bob)).status_code == 200
        over = await b.post("/v1/chat/completions", json={"model": "priced", "messages": HELLO}, headers=cy)
        assert over.status_code == 429 and over.json()["error"]["type"] == "budget_exceeded"
        assert "provider priced budget of $30.00 per month has $22.0000 left" in over.json()["error"]["message"]


async def test_unpriced_models_are_recorded_unpriced_and_follow_the_budgets_setting(tmp_path: Path) -> None:
    limits = {"users": {"ann": {"budget_usd": 20}}}
    group = replicas(tmp_path, limits=limits)
    async with client(group.apps[0], **{"X-User-Id": "ann"}) as http:
        served = await http.post("/api/streaming/chat", json=chat("free"))
        assert served.status_code == 200 and warnings(served) == ["budget_unpriced"]
        finish = events(served)[-1]
        assert finish["metrics"]["cost_usd"] is None and finish["metrics"]["unpriced"] is True
        plain = await http.post("/api/streaming/chat", json=chat("free"), headers={"X-User-Id": "bob"})
        assert warnings(plain) == []  # no budget: nothing to warn about, and still recorded unpriced
        spend = (await http.get("/api/spend", params={"group_by": "provider"})).json()
        assert spend["data"] == [
            {"provider": "free", "cost_usd": 0.0, "runs": 2, "unpriced_runs": 2, "tokens": spend["total"]["tokens"]}
        ]
        assert [row["cost_usd"] for row in group.store.run_costs(0, math.inf)] == [None, None]
        assert group.store.get_run(finish["run_id"])["cost"]["unpriced"] is True  # type: ignore[index]
        assert group.limits.ledger.spent(Budget("user", "ann", 20, "month")) == 0.0  # unknown is not zero: uncounted
    (tmp_path / "strict").mkdir()
    strict = replicas(tmp_path / "strict", limits=limits, budgets={"unpriced": "refuse"})
    async with client(strict.apps[0], **{"X-User-Id": "ann"}) as http:
        refused = await http.post("/api/streaming/chat", json=chat("free"), headers={"X-Session-Id": "unwritten"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "unpriced_model"
        assert "free/free has no price" in refused.json()["error"]["message"]
        assert strict.store.get_session("unwritten") is None
        assert (await http.post("/api/streaming/chat", json=chat())).status_code == 200  # priced: served


async def test_fifty_concurrent_requests_on_two_replicas_overshoot_by_nothing(tmp_path: Path) -> None:
    group = replicas(tmp_path, limits={"users": {"ann": {"budget_usd": 100, "budget_period": "day"}}})
    a, b = client(group.apps[0], **{"X-User-Id": "ann"}), client(group.apps[1], **{"X-User-Id": "ann"})
    async with a, b:
        body = chat(stream_format="json")
        responses = await asyncio.gather(*(http.post("/api/streaming/chat", json=body) for http in [a, b] * 25))
        spend = (await a.get("/api/spend", params={"group_by": "user"})).json()
    codes = [response.status_code for response in responses]
    admitted = codes.count(200)
    assert codes.count(429) == 50 - admitted
    assert all(r.json()["error"]["type"] == "budget_exceeded" for r in responses if r.status_code == 429)
    spent = spend["total"]["cost_usd"]
    overshoot = max(0.0, spent - 100)
    print(f"50 concurrent on 2 replicas, budget $100: {admitted} admitted, ${spent:.2f} spent, overshoot ${overshoot}")
    assert spent == 6.0 * admitted and overshoot == 0.0
    assert admitted >= 5  # at least what fits worst case after worst case ($17 each)
    assert group.limits.ledger.held == {("user", "ann", "day"): 0.0}  # every reservation replaced by its cost



async def test_history_counts_in_the_worst_case_so_sessions_do_not_overshoot_either(tmp_path: Path) -> None:
    """50 concurrent turns of 50 sessions that already hold history: the estimate of the request's own messages
    would miss it (a $80 turn would reserve $26); the session's history, capped by the context budget, is held."""
    providers = [
        {"provider_id": "echo", "provider_type": "echo", "model": "echo", "default_max_tokens": 5},
        {"provider_id": "priced", "provider_type": "echo", "model": "p-1", "default_max_tokens": 5, "budget_usd": 1000},
    ]
    group = replicas(tmp_path, providers=providers, context={"history_max_tokens": 60})
    words = " ".join(f"w{i}" for i in range(12))
    a, b = client(group.apps[0], **{"X-User-Id": "ann"}), client(group.apps[1], **{"X-User-Id": "ann"})
    async with a, b:
        for i in range(50):  # each session: 24 words of history, on the unbudgeted provider
            seeded = chat(messages=[{"role": "user", "content": words}], stream_format="json")
            assert (await a.post("/api/streaming/chat", json=seeded, headers={"X-Session-Id": f"s{i}"})).is_success
        turn = chat("priced", stream_format="json")
        turns = [
            http.post("/api/streaming/chat", json=turn, headers={"X-Session-Id": f"s{i}"})
            for i, http in enumerate([a, b] * 25)
        ]
        responses = await asyncio.gather(*turns)
    admitted = [r for r in responses if r.status_code == 200]
    costs = [row["cost_usd"] for row in group.store.run_costs(0, math.inf) if row["provider"] == "priced"]
    spent = sum(costs)
    overshoot = max(0.0, spent - 1000)
    print(f"50 concurrent session turns on 2 replicas, budget $1000: {len(admitted)} admitted, ${spent:.2f} spent")
    assert costs == [80.0] * len(admitted)  # 26 input tokens at $3 and 2 output at $1: more than $26
    assert overshoot == 0.0 and len(admitted) >= 4  # $206 reserved each: (7 + 60 history) x $3 + 5 x $1


async def test_a_reservation_is_held_while_the_run_streams_and_a_websocket_turn_is_refused_alike(
    tmp_path: Path,
) -> None:
    group = replicas(tmp_path, count=1, limits={"users": {"ann": {"budget_usd": 20, "budget_period": "day"}}})
    ann = Budget("user", "ann", 20, "day")
    slow = chat(messages=[{"role": "user", "content": "one two three four"}], provider_options={"tokens_per_s": 4})
    with ServerThread(group.apps[0]) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            async with http.stream("POST", "/api/streaming/chat", json=slow) as streaming:
                assert streaming.status_code == 200
                lines = streaming.aiter_lines()
                assert orjson.loads(await anext(lines))["type"] == "status"
                assert group.limits.ledger.held[ann.scope] == 19.0  # the worst case: 9 input and 5 output tokens
                rest = [orjson.loads(line) async for line in lines if line]
            assert rest[-1]["metrics"]["cost_usd"] == 12.0  # 4 words in at $1, 4 out at $2
            await await_until(
                lambda: group.limits.ledger.held[ann.scope], timeout_s=10, what="the settle", done=lambda h: h == 0
            )
            assert group.limits.ledger.spent(ann) == 12.0
        ws_url = server.url.replace("http://", "ws://") + "/api/streaming/ws/ann"
        async with websockets.connect(ws_url) as ws:  # $12 spent + $17 worst case > $20
            data = {"messages": HELLO, "provider_id": "echo"}
            await ws.send(orjson.dumps({"message_type": "chat_request", "request_id": "r1", "data": data}).decode())
            reply = orjson.loads(await ws.recv())
            while reply["message_type"] == "ack":  # the request is acknowledged, then answered
                reply = orjson.loads(await ws.recv())
    assert reply["message_type"] == "error" and reply["data"]["type"] == "budget_exceeded"
    assert "user ann budget of $20.00 per day has $8.0000 left" in reply["data"]["message"]
