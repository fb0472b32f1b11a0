"""Load-balanced routes: the strategies as pure functions, then under load through the in-process app."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from relay.config import ProviderConfig, RelaySettings, RouteConfig
from relay.http.app import build_app
from relay.request import ChatRequest, RoutePlan, Target
from relay.session.balancer import Balancer, PoolView, rank, route_health, smooth_weighted
from relay.session.local_backend import LocalBackend
from relay.types import Batches
from tests.core.test_app import sse_events
from tests.fakes.openai_upstream import free_port

# pure strategies


def test_weighted_round_robin_is_exact_and_smooth() -> None:
    current = [0.0, 0.0]
    picks = [smooth_weighted(current, [3, 1], [0, 1]) for _ in range(400)]
    assert Counter(picks) == {0: 300, 1: 100}
    assert all(Counter(picks[i : i + 4]) == {0: 3, 1: 1} for i in range(0, 400, 4))  # every cycle of 4, not bursts


def test_least_busy_picks_the_fewest_streams_per_weight() -> None:
    rng = random.Random(0)
    views = [PoolView(load=4), PoolView(load=1), PoolView(load=2)]
    assert rank("least-busy", [1, 1, 1], views, [0.0] * 3, rng) == [1, 2, 0]
    # pool 0 carries twice the weight: 4 streams there count as 2
    assert rank("least-busy", [2, 1, 1], [PoolView(4), PoolView(3), PoolView(2)], [0.0] * 3, rng)[0] == 0
    # ties go round robin, so equal pools share a burst evenly
    current = [0.0, 0.0]
    firsts = [rank("least-busy", [1, 1], [PoolView(1), PoolView(1)], current, rng)[0] for _ in range(6)]
    assert Counter(firsts) == {0: 3, 1: 3}


def test_latency_measures_every_pool_then_prefers_the_fastest() -> None:
    rng = random.Random(7)
    current = [0.0, 0.0, 0.0]
    unmeasured = [PoolView(ttft_ms=50.0), PoolView(), PoolView(ttft_ms=5.0)]
    assert rank("latency", [1, 1, 1], unmeasured, current, rng)[0] == 1
    measured = [PoolView(ttft_ms=50.0), PoolView(ttft_ms=80.0), PoolView(ttft_ms=5.0)]
    assert rank("latency", [1, 1, 1], measured, current, rng, explore=0.0) == [2, 0, 1]
    explored = Counter(rank("latency", [1, 1, 1], measured, current, rng, explore=0.3)[0] for _ in range(1000))
    assert explored[2] > 700 and explored[0] > 50 and explored[1] > 50  # ~10 % each still goes by weight


def test_an_open_breaker_goes_last_whatever_the_strategy() -> None:
    views = [PoolView(load=0, ttft_ms=1.0, open=True), PoolView(load=9, ttft_ms=90.0)]
    for strategy in ("weighted", "least-busy", "latency"):
        assert rank(strategy, [100, 1], views, [0.0, 0.0], random.Random(0)) == [1, 0]
    everything_open = [PoolView(open=True), PoolView(open=True)]
    assert sorted(rank("weighted", [1, 1], everything_open, [0.0, 0.0], random.Random(0))) == [0, 1]


async def test_a_router_counts_its_own_streams_between_two_reads_of_the_pools() -> None:
    reads = 0
    reported = {"a": {"in_flight": 5, "breaker": "closed"}, "b": {"in_flight": 0, "breaker": "closed"}}

    async def stats(target: Target) -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return reported[target.provider]

    now = [0.0]
    router = Balancer(stats, stats_ttl_s=1.0, clock=lambda: now[0])
    plan = RoutePlan("r", "least-busy", (Target("a"), Target("b")), (1.0, 1.0))
    held: list[Batches] = []

    async def hold(request: ChatRequest) -> Batches:
        yield [{"type": "status", "status": "running"}]
        await asyncio.Event().wait()

    picks = []
    for _ in range(8):  # a burst within one stats interval: the pools' numbers are stale all along
        request = await router.plan(ChatRequest(provider="r", messages=[], route=plan))
        picks.append(request.provider)
        stream = router.tracked(hold)(request)
        await anext(stream)
        held.append(stream)
    # b fills up to a's 5, then they take turns: the loads end within one stream of each other
    assert reads == 2 and picks[:5] == ["b"] * 5
    assert abs((5 + picks.count("a")) - picks.count("b")) <= 1
    assert router.local == {"a": picks.count("a"), "b": picks.count("b")}
    for stream in held:
        await stream.aclose()
    assert router.local == {"a": 0, "b": 0}


async def test_routers_start_their_rotation_at_random_points() -> None:
    plan = RoutePlan("r", "weighted", (Target("a"), Target("b")), (1.0, 1.0))
    firsts = {(await Balancer(rng=random.Random(seed)).order(plan))[0].provider for seed in range(20)}
    assert firsts == {"a", "b"}  # many session actors starting at once do not all pick the same pool first


def test_route_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="same pool twice"):
        RouteConfig(name="r", pools=[{"provider": "a"}, {"provider": "a"}])
    with pytest.raises(ValidationError, match="strategy"):
        RouteConfig(name="r", strategy="fastest", pools=[{"provider": "a"}])
    with pytest.raises(ValidationError, match="not a configured provider"):
        RelaySettings(routes=[{"name": "r", "pools": [{"provider": "missing"}]}])
    with pytest.raises(ValidationError, match="already a provider"):
        RelaySettings(routes=[{"name": "echo", "pools": [{"provider": "echo"}]}])


def test_route_health_reports_each_pools_share() -> None:
    route = RouteConfig(name="r", pools=[{"provider": "a", "weight": 3}, {"provider": "b"}])
    pools = [
        {"provider_id": "a", "requests": 30, "in_flight": 1, "breaker": {"state": "closed"}},
        {"provider_id": "b", "requests": 10, "in_flight": 0, "breaker": {"state": "open"}},
    ]
    [health] = route_health([route], pools)
    assert [(p["configured_share"], p["share"], p["breaker"]) for p in health["pools"]] == [
        (0.75, 0.75, "closed"),
        (0.25, 0.25, "open"),
    ]


# through the app, in-process


def _echo(provider_id: str, **options: Any) -> ProviderConfig:
    return ProviderConfig(provider_id=provider_id, provider_type="echo", model="echo", options=options)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("routes")) / "relay.db"
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    providers = [
        _echo("w-big"),
        _echo("w-small"),
        _echo("busy-a", tokens_per_s=20, repeat=50),
        _echo("busy-b", tokens_per_s=20, repeat=50),
        _echo("fast", ttft_ms=1),
        _echo("slow", ttft_ms=300),
        ProviderConfig(
            provider_id="down", provider_type="openai_compatible", base_url=dead, max_retries=0, breaker_threshold=2
        ),
        _echo("spare"),
    ]
    routes = [
        {"name": "weighted", "pools": [{"provider": "w-big", "weight": 3}, {"provider": "w-small"}]},
        {"name": "least", "strategy": "least-busy", "pools": [{"provider": "busy-a"}, {"provider": "busy-b"}]},
        {"name": "quick", "strategy": "latency", "explore": 0, "pools": [{"provider": "slow"}, {"provider": "fast"}]},
        {"name": "sturdy", "pools": [{"provider": "down"}, {"provider": "spare"}]},
    ]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers, routes=routes))


@pytest.fixture(scope="module")
def server(backend: LocalBackend) -> Iterator[str]:
    from tests.fakes.openai_upstream import ServerThread

    with ServerThread(build_app(backend)) as running:
        yield running.url


async def turn(http: httpx.AsyncClient, model: str, text: str = "hi") -> list[dict[str, Any]]:
    response = await http.post(
        "/api/streaming/chat", json={"model": model, "messages": [{"role": "user", "content": text}]}
    )
    assert response.status_code == 200, response.text
    return sse_events(response.text)


def served_by(events: list[dict[str, Any]]) -> str:
    return str(events[-1]["metrics"]["provider"])


async def test_weighted_holds_its_shares_under_concurrent_load(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        runs = await asyncio.gather(*(turn(http, "weighted") for _ in range(40)))
        assert Counter(served_by(events) for events in runs) == {"w-big": 30, "w-small": 10}
        assert all(events[-1]["reason"] == "stop" for events in runs)
        health = (await http.get("/api/streaming/providers/health")).json()
    route = next(r for r in health["routes"] if r["name"] == "weighted")
    assert [(p["provider"], p["configured_share"], p["share"]) for p in route["pools"]] == [
        ("w-big", 0.75, 0.75),
        ("w-small", 0.25, 0.25),
    ]


async def test_least_busy_counts_streams_that_did_not_come_through_the_route(
    server: str, backend: LocalBackend
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http, contextlib.AsyncExitStack() as held:

        readers: list[AsyncIterator[str]] = []  # kept: a collected reader would close its stream

        async def hold(model: str) -> None:
            """Open a long stream and keep it open once its first word arrived."""
            body = {"model": model, "messages": [{"role": "user", "content": "long stream"}]}
            response = await held.enter_async_context(http.stream("POST", "/api/streaming/chat", json=body))
            readers.append(lines := response.aiter_lines())
            async for line in lines:
                if line == "event: text-delta":
                    return

        for _ in range(4):
            await hold("busy-a")  # straight to the pool, around the route
        for _ in range(10):
            await hold("least")
        assert (backend.runtimes["busy-a"].in_flight, backend.runtimes["busy-b"].in_flight) == (7, 7)


async def test_latency_sends_traffic_to_the_pool_with_the_lowest_moving_ttft(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        served = [served_by(await turn(http, "quick")) for _ in range(12)]
    assert sorted(served[:2]) == ["fast", "slow"]  # each pool is measured once
    assert served[2:] == ["fast"] * 10


async def test_a_pool_that_is_down_falls_back_and_its_open_breaker_sends_it_last(
    server: str, backend: LocalBackend
) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        runs = [await turn(http, "sturdy", f"n{i}") for i in range(10)]
        health = (await http.get("/api/streaming/providers/health")).json()
    assert all(served_by(events) == "spare" and events[-1]["reason"] == "stop" for events in runs)
    fallbacks = [e for events in runs for e in events if e["type"] == "status" and e["status"] == "fallback"]
    assert len(fallbacks) == 2  # two failures open the breaker; from then on the route puts the pool last
    assert all("down failed" in e["message"] and "falling back to spare" in e["message"] for e in fallbacks)
    down = next(
        p for p in next(r for r in health["routes"] if r["name"] == "sturdy")["pools"] if p["provider"] == "down"
    )
    assert down["breaker"] == "open"
