"""Spend over HTTP: every surface records its runs' costs, ``GET /api/spend`` sums exactly those, a non-admin key
sees its own; key budgets by ``PATCH /api/keys/{key_id}`` and ``relay keys update``; ``relay spend``; an evaluation
that stops at its provider's budget and resumes."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from relay.cli import main
from relay.config import ProviderConfig
from relay.evaluation import EvalOptions, Evaluation, LocalProviderLimiter, ResultStore, RuntimeReplies, parse_rows
from relay.evaluation.plan import Candidate
from relay.evaluation.summary import summary_row
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from relay.spend import Budget, Price, PriceTable, period_bounds
from tests.fakes.openai_upstream import ServerThread
from tests.fakes.priced import HELLO, Clock, priced_settings

SURFACES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"model": "echo", "messages": HELLO}),
    ("/v1/chat/completions", {"model": "echo", "messages": HELLO, "stream": True}),
    ("/v1/messages", {"model": "echo", "max_tokens": 5, "messages": HELLO}),
    ("/v1/messages", {"model": "echo", "max_tokens": 5, "messages": HELLO, "stream": True}),
    ("/api/streaming/chat", {"provider_id": "priced", "messages": HELLO, "stream_format": "json"}),
    ("/api/streaming/chat", {"provider_id": "priced", "messages": HELLO}),
    ("/v1/responses", {"model": "priced", "input": "hello there"}),
    ("/v1/responses", {"model": "priced", "input": "hello there", "stream": True}),
]


async def websocket_turn(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One chat_request over the WebSocket; its finish event."""
    ws_url = url.replace("http://", "ws://") + "/api/streaming/ws/ann"
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        data = {"messages": HELLO, "provider_id": "priced"}
        await ws.send(orjson.dumps({"message_type": "chat_request", "request_id": "r1", "data": data}).decode())
        async for raw in ws:
            event = orjson.loads(raw)["data"].get("event_data") or {}
            if event.get("type") == "finish":
                return event
    raise AssertionError("the WebSocket closed before the run finished")


async def test_spend_is_the_sum_of_the_stored_run_costs_on_every_surface(tmp_path: Path) -> None:
    settings = priced_settings(tmp_path)
    backend = LocalBackend(settings)
    with ServerThread(build_app(backend)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            for path, body in SURFACES:
                response = await http.post(path, json=body)
                assert response.status_code == 200, (path, response.text)
            finish = await websocket_turn(server.url, {"X-User-Id": "ann"})
            assert finish["metrics"]["cost_usd"] == 8.0 and finish["metrics"]["provider"] == "priced"
            await http.post("/api/streaming/chat", json=SURFACES[4][1], headers={"X-User-Id": "bob"})
            reports = {
                group: (await http.get("/api/spend", params={"group_by": group})).json()
                for group in ("provider", "model", "user", "key", "day")
            }
    rows = backend.store.run_costs(0, math.inf)
    assert len(rows) == len(SURFACES) + 2  # one run per request, the WebSocket's and bob's included
    by_provider: dict[str, float] = {}
    for row in rows:
        by_provider[row["provider"]] = by_provider.get(row["provider"], 0.0) + row["cost_usd"]
    assert by_provider == {"echo": 4 * 6.0, "priced": 6 * 8.0}  # $6 a run on echo, $8 on priced, on every surface
    provider = reports["provider"]
    assert {g["provider"]: g["cost_usd"] for g in provider["data"]} == by_provider
    assert provider["total"]["runs"] == len(rows) and provider["total"]["unpriced_runs"] == 0
    tokens = {"input": 20, "cached_input": 0, "cache_write": 0, "output": 20, "reasoning": 0}
    assert provider["total"]["tokens"] == tokens
    assert {g["model"]: g["cost_usd"] for g in reports["model"]["data"]} == {"echo": 24.0, "p-1": 48.0}
    assert {g["user"]: g["cost_usd"] for g in reports["user"]["data"]} == {"ann": 64.0, "bob": 8.0}
    assert [g["key"] for g in reports["key"]["data"]] == ["-"]  # an open server: no keys
    assert [g["day"] for g in reports["day"]["data"]] == [time.strftime("%Y-%m-%d", time.gmtime())]
    assert all(report["total"]["cost_usd"] == 72.0 for report in reports.values())


def create_key(store_url: str, user: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["keys", "create", "--user", user, "--store-url", store_url, *extra]) == 0
    out, err = capsys.readouterr()
    return out.strip(), err.split(":")[0]


async def test_a_key_sees_its_own_spend_and_an_admin_sets_key_budgets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = priced_settings(tmp_path)
    alice, alice_id = create_key(settings.store_url, "alice", capsys=capsys)
    bob, bob_id = create_key(settings.store_url, "bob", capsys=capsys)
    root, _ = create_key(settings.store_url, "root", "--admin", capsys=capsys)
    chat = {"provider_id": "echo", "messages": HELLO, "stream_format": "json"}
    with ServerThread(build_app(LocalBackend(settings))) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for key in (alice, bob, bob):
                assert (await http.post("/api/streaming/chat", json=chat, headers=_bearer(key))).status_code == 200
            own = await http.get("/api/spend", params={"user_id": "bob", "group_by": "key"}, headers=_bearer(alice))
            assert own.json()["user_id"] == "alice"  # whatever a non-admin asks, the answer is its own
            assert own.json()["data"] == [_group("key", alice_id, 6.0, 1)]
            everyone = await http.get("/api/spend", params={"group_by": "key"}, headers=_bearer(root))
            assert everyone.json()["data"] == [_group("key", bob_id, 12.0, 2), _group("key", alice_id, 6.0, 1)]
            bad = await http.get("/api/spend", params={"from": "last week"}, headers=_bearer(root))
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
            patch = f"/api/keys/{alice_id}"
            year = {"budget_usd": 5, "budget_period": "year"}
            bad_bodies = (({"budget_usd": -1}, "budget_usd"), (year, "budget_period"))
            for body, field in bad_bodies:
                refused = await http.patch(patch, json=body, headers=_bearer(root))
                assert refused.status_code == 400 and refused.json()["error"]["param"] == field
            assert (await http.patch(patch, json={"budget_usd": 5}, headers=_bearer(alice))).status_code == 403
            missing = await http.patch("/api/keys/key_none", json={"budget_usd": 5}, headers=_bearer(root))
            assert missing.status_code == 404
            done = await http.patch(patch, json={"budget_usd": 10, "budget_period": "day"}, headers=_bearer(root))
            assert done.json() == {
                "key_id": alice_id, "user_id": "alice", "name": None, "budget_usd": 10.0, "budget_period": "day"
            }
            # $6 spent today, $17 the worst case of the next: refused at once (auth.cache_ttl_s is 0 here)
            refused = await http.post("/api/streaming/chat", json=chat, headers=_bearer(alice))
            assert refused.status_code == 429 and refused.json()["error"]["type"] == "budget_exceeded"
            assert main(["keys", "update", alice_id, "--budget-usd", "none", "--store-url", settings.store_url]) == 0
            assert (await http.post("/api/streaming/chat", json=chat, headers=_bearer(alice))).status_code == 200
        capsys.readouterr()
        assert main(["spend", "--url", server.url, "--api-key", root, "--group-by", "user"]) == 0
        lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["user", "cost_usd", "runs", "unpriced", "input", "cached", "output", "reasoning"]
    assert set(lines[1]) == {"-", " "}  # a plain rule into a pipe: no box drawing, no colour
    assert [line.split()[:3] for line in lines[2:]] == [
        ["alice", "12.000000", "2"], ["bob", "12.000000", "2"], ["total", "24.000000", "4"]
    ]
    update = ["keys", "update", bob_id, "--budget-usd", "7.5", "--budget-period", "week"]
    assert main([*update, "--store-url", settings.store_url]) == 0
    assert main(["keys", "list", "--store-url", settings.store_url]) == 0
    listing = capsys.readouterr().out
    assert "$7.50 per week" in listing


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _group(group_by: str, name: str, usd: float, runs: int) -> dict[str, Any]:
    tokens = {"input": 2 * runs, "cached_input": 0, "cache_write": 0, "output": 2 * runs, "reasoning": 0}
    return {group_by: name, "cost_usd": usd, "runs": runs, "unpriced_runs": 0, "tokens": tokens}


async def test_a_memory_call_is_added_to_the_cost_of_the_run_that_caused_it(tmp_path: Path) -> None:
    settings = priced_settings(tmp_path, context={"memory_provider": "echo", "memory_model": "echo"})
    backend = LocalBackend(settings)
    with ServerThread(build_app(backend)) as server:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            body = {"provider_id": "priced", "messages": HELLO, "stream_format": "ndjson"}
            reply = orjson.loads((await http.post("/api/streaming/chat", json=body)).text.splitlines()[-1])
    await backend.sessions[reply["session_id"]].settled()  # the memory call runs after the run
    run = backend.store.get_run(reply["run_id"])
    assert run is not None and run["cost_usd"] > 8.0  # the run's $8, and the memory call priced on echo
    memory_input = run["cost"]["tokens"]["input"] - 2
    memory_output = run["cost"]["tokens"]["output"] - 2
    assert memory_input > 0 and run["cost_usd"] == 8.0 + memory_input * 1.0 + memory_output * 2.0


ROWS = parse_rows([{"id": f"r{i}", "prompt": f"city number {i} is Paris", "expected": "Paris"} for i in range(6)])


def evaluation(store: ResultStore, budget: float, clock: Clock) -> Evaluation:
    """Each cell: 5 words in and out on echo at $1 and $2 a token, $15; its worst case $20 (max_tokens 5)."""
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    return Evaluation(
        ROWS,
        [Candidate("echo", "echo", "echo")],
        store=store,
        complete=RuntimeReplies([echo]),
        limiter=LocalProviderLimiter(),
        options=EvalOptions(concurrency=1, params={"max_tokens": 5}),
        prices=PriceTable({"echo": Price(1_000_000, 2_000_000)}),
        budgets={"echo": Budget("provider", "echo", budget, "day")},
        clock=clock,
    )


async def test_an_evaluation_stops_at_its_provider_budget_and_resumes_when_it_allows(tmp_path: Path) -> None:
    clock = Clock()
    store = ResultStore(f"sqlite:///{tmp_path}/results.db")
    first = await evaluation(store, 40.0, clock).run()
    statuses = [record["status"] for record in first.records]
    assert statuses == ["ok", "ok", "refused", "refused", "refused", "refused"]  # $30 spent; $30 + $20 > $40
    refused = first.records[2]
    assert refused["error"]["error_type"] == "budget_exceeded" and refused["output"] == "" and refused["cost"] == 0.0
    assert "provider echo budget of $40.00 per day has $10.0000 left" in refused["error"]["message"]
    assert first.summaries[0].refused == 4 and first.summaries[0].errors == 0
    assert summary_row(first.summaries[0])[2] == "0 (4 refused: budget)"
    again = await evaluation(store, 40.0, clock).run()  # the same day: what the first run spent still counts
    assert again.called == 4 and [r["status"] for r in again.records].count("refused") == 4
    clock.now = period_bounds("day", clock.now)[1] or 0.0  # the next day: the budget allows two more
    next_day = await evaluation(store, 40.0, clock).run()
    assert next_day.called == 4 and [r["status"] for r in next_day.records].count("ok") == 4
    raised = await evaluation(store, 1000.0, clock).run()  # a raised budget: the rest complete, nothing rerun
    assert raised.called == 2 and all(r["status"] == "ok" for r in raised.records)
    assert sum(r["cost"] for r in raised.records) == 6 * 15.0


async def test_cached_input_reasoning_and_cache_writes_each_have_their_price_end_to_end(
    tmp_path: Path, fake_openai: tuple[Any, str], fake_anthropic: tuple[Any, str]
) -> None:
    """The fake OpenAI reports 7 prompt tokens (2 cached) and 4 completion tokens (1 reasoning); the fake Anthropic
    11 uncached input tokens, 5 cache reads and 3 cache writes, apart."""
    anthropic, anthropic_url = fake_anthropic
    (tmp_path / "upstream-prices.yaml").write_text(
        "prices:\n"
        "  up/*: {input: 1000000, output: 2000000, cached_input: 500000, reasoning: 10000000}\n"
        "  claude/*: {input: 1000000, output: 2000000, cached_input: 100000, cache_write: 1250000}\n"
    )
    providers = [
        {"provider_id": "up", "provider_type": "openai_compatible", "model": "fake", "base_url": fake_openai[1]},
        {
            "provider_id": "claude",
            "provider_type": "anthropic",
            "model": "fake-claude",
            "base_url": anthropic_url,
            "api_key": anthropic.api_key,
        },
    ]
    settings = priced_settings(tmp_path, providers=providers, prices=str(tmp_path / "upstream-prices.yaml"))
    backend = LocalBackend(settings)
    with ServerThread(build_app(backend)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for model in ("up", "claude"):
                body = {"model": model, "messages": [{"role": "user", "content": "one two"}], "max_tokens": 5}
                assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    openai_run, anthropic_run = backend.store.run_costs(0, math.inf)
    split = {"input": 5, "cached_input": 2, "cache_write": 0, "output": 3, "reasoning": 1}
    assert openai_run["cost"]["tokens"] == split
    assert openai_run["cost_usd"] == pytest.approx(5 * 1 + 2 * 0.5 + 3 * 2 + 1 * 10)
    tokens = anthropic_run["cost"]["tokens"]
    assert (tokens["input"], tokens["cached_input"], tokens["cache_write"]) == (11, 5, 3)
    assert anthropic_run["cost_usd"] == pytest.approx(11 + 5 * 0.1 + 3 * 1.25 + tokens["output"] * 2)
