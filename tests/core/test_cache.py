"""The response cache: keys and the determinism rule, the store's TTL and size limits, then hits over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.cache import CachePolicy, ResponseCache, cache_key, cacheable, replayable
from relay.session.local_backend import LocalBackend
from relay.store import Store, open_store
from tests.core.test_app import sse_events
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

MESSAGES = [{"role": "user", "content": "hello"}]


def test_only_deterministic_requests_are_cacheable() -> None:
    assert cacheable({"temperature": 0})
    assert cacheable({"temperature": 0.0, "n": 1, "seed": 3})
    assert not cacheable({"temperature": 0.7})
    assert not cacheable({})  # the provider's default temperature is not 0
    assert not cacheable({"temperature": 0, "n": 2})


def test_the_key_covers_provider_model_messages_tools_and_sampling() -> None:
    base = cache_key("route", "m", MESSAGES, {"temperature": 0, "max_tokens": 5}, {})
    assert base == cache_key(
        "route", "m", [{"content": "hello", "role": "user"}], {"max_tokens": 5, "temperature": 0}, {}
    )
    tools = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    different = [
        cache_key("other", "m", MESSAGES, {"temperature": 0, "max_tokens": 5}, {}),
        cache_key("route", "m2", MESSAGES, {"temperature": 0, "max_tokens": 5}, {}),
        cache_key("route", "m", [{"role": "user", "content": "hello!"}], {"temperature": 0, "max_tokens": 5}, {}),
        cache_key("route", "m", MESSAGES, {"temperature": 0, "max_tokens": 6}, {}),
        cache_key("route", "m", MESSAGES, {"temperature": 0, "max_tokens": 5} | tools, {}),
        cache_key("route", "m", MESSAGES, {"temperature": 0, "max_tokens": 5}, {"ttft_ms": 1}),
    ]
    assert len({base, *different}) == 7


def test_only_a_clean_reply_is_replayable() -> None:
    events = [
        {"type": "status", "status": "retrying", "id": 1},
        {"type": "text-delta", "content": "hi", "id": 2},
        {"type": "usage", "input_tokens": 3, "output_tokens": 1, "id": 3},
    ]
    assert replayable(events, "stop") == [{"type": "text-delta", "content": "hi"}, {"type": "finish", "reason": "stop"}]
    assert replayable([*events, {"type": "error", "error_type": "x", "message": "m"}], "stop") is None
    assert replayable(events, "error") is None and replayable(events, "cancelled") is None


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path}/relay.db")
    return open_store(str(request.getfixturevalue("fresh_pg_url")))


async def test_entries_expire_after_their_ttl(store: Store) -> None:
    now = [1000.0]
    cache = ResponseCache(store, clock=lambda: now[0])
    policy = CachePolicy("r", ttl_s=60, max_entries=10, max_entry_bytes=1 << 20)
    events = [{"type": "text-delta", "content": "cached"}, {"type": "finish", "reason": "stop"}]
    assert await cache.get("k") is None and await cache.put(policy, "k", events)
    now[0] += 59.5
    assert await cache.get("k") == (events, 59.5)
    now[0] += 0.5
    assert await cache.get("k") is None  # expired at exactly ttl_s


async def test_the_size_limits_hold(store: Store) -> None:
    now = [0.0]
    cache = ResponseCache(store, clock=lambda: now[0])
    policy = CachePolicy("r", ttl_s=3600, max_entries=3, max_entry_bytes=200)
    for i in range(5):
        now[0] += 1
        assert await cache.put(policy, f"k{i}", [{"type": "text-delta", "content": f"reply {i}"}])
    assert store.cache_keys("r") == ["k4", "k3", "k2"]  # the oldest beyond max_entries are dropped
    assert not await cache.put(policy, "big", [{"type": "text-delta", "content": "x" * 500}])
    assert await cache.get("big") is None
    other = CachePolicy("other", ttl_s=3600, max_entries=1, max_entry_bytes=200)
    assert await cache.put(other, "o1", [{"type": "text-delta", "content": "o"}])
    assert store.cache_keys("r") == ["k4", "k3", "k2"]  # each route keeps its own entries


# through the app


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, fake_openai: tuple[FakeOpenAI, str]) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("cache")) / "relay.db"
    upstream = {"provider_type": "openai_compatible", "base_url": fake_openai[1], "max_retries": 0}
    providers = [
        ProviderConfig(provider_id="up", model="fake", **upstream),
        ProviderConfig(provider_id="broken", model="fake-status-500", **upstream),
        ProviderConfig(provider_id="midway", model="fake-midstream-error", **upstream),
    ]
    routes = [
        {"name": "cached", "pools": [{"provider": "up"}], "cache": {"ttl_s": 600}},
        {"name": "cached-broken", "pools": [{"provider": "broken"}], "cache": {}},
        {"name": "cached-midway", "pools": [{"provider": "midway"}], "cache": {}},
        {"name": "uncached", "pools": [{"provider": "up"}]},
    ]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers, routes=routes))


@pytest.fixture(scope="module")
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


def upstream_count(fake: FakeOpenAI, text: str) -> int:
    return sum(1 for r in fake.requests if r["body"]["messages"][-1].get("content") == text)


async def stream(http: httpx.AsyncClient, model: str, text: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]} | extra
    return await http.post("/api/streaming/chat", json=body)


async def test_a_hit_replays_the_reply_in_the_same_format_without_the_upstream(
    server: str, backend: LocalBackend, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        miss = await stream(http, "cached", "cache me if you can")
        hit = await stream(http, "cached", "cache me if you can")
    assert miss.headers["x-relay-cache"] == "miss" and hit.headers["x-relay-cache"] == "hit"
    assert upstream_count(fake, "cache me if you can") == 1
    assert fake.requests[-1]["body"]["temperature"] == 0  # the route's default made the request deterministic
    missed, replayed = sse_events(miss.text), sse_events(hit.text)
    deltas = [e["content"] for e in missed if e["type"] == "text-delta"]
    assert [e["type"] for e in missed] == ["status", *["text-delta"] * len(deltas), "usage", "finish"]
    assert [e["type"] for e in replayed] == ["status", "cache-hit", *["text-delta"] * len(deltas), "finish"]
    assert [e["content"] for e in replayed if e["type"] == "text-delta"] == deltas  # token for token
    assert replayed[1]["route"] == "cached" and replayed[1]["age_s"] >= 0 and replayed[-1]["reason"] == "stop"
    run = backend.store.runs(hit.headers["x-session-id"])[0]
    assert run["status"] == "completed" and run["output"] == "cache me if you can " and run["usage"] == {}


async def test_the_openai_sdk_sees_a_hit_like_any_reply(server: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake, _ = fake_openai
    client = openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)
    messages = [{"role": "user", "content": "sdk cached words"}]
    first = await client.chat.completions.with_raw_response.create(model="cached", messages=messages, temperature=0)
    second = await client.chat.completions.with_raw_response.create(model="cached", messages=messages, temperature=0)
    assert (first.headers["x-relay-cache"], second.headers["x-relay-cache"]) == ("miss", "hit")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content == "sdk cached words "
    streamed = await client.chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0, stream=True
    )
    chunks = [chunk async for chunk in streamed.parse()]
    assert streamed.headers["x-relay-cache"] == "hit"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "sdk cached words "
    assert upstream_count(fake, "sdk cached words") == 1


async def test_non_deterministic_and_uncached_requests_go_upstream(
    server: str, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        warm = [await stream(http, "cached", "warm words", temperature=0.7) for _ in range(2)]
        plain = [await stream(http, "uncached", "plain words", temperature=0) for _ in range(2)]
    assert [r.headers["x-relay-cache"] for r in warm] == ["bypass", "bypass"]
    assert all("x-relay-cache" not in r.headers for r in plain)
    assert upstream_count(fake, "warm words") == 2 and upstream_count(fake, "plain words") == 2


@pytest.mark.parametrize("route", ["cached-broken", "cached-midway"])
async def test_errors_are_never_cached(server: str, fake_openai: tuple[FakeOpenAI, str], route: str) -> None:
    fake, _ = fake_openai
    text = f"do not keep {route}"
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        replies = [await stream(http, route, text) for _ in range(2)]
    assert upstream_count(fake, text) == 2
    for reply in replies:
        assert reply.status_code == 200 or reply.status_code >= 500
        assert "cache-hit" not in reply.text
