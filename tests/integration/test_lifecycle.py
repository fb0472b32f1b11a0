"""Session lifecycle on the shared app: the live cap (LRU), the idle TTL timer, retention, and the stats.

The app is deployed once per test session with passivation left to the tests; each test here changes the
lifecycle settings it needs on the running directory (``tune``) and puts them back afterwards. Retention
deletes every stored session that is not live, including other modules' passivated ones: nothing after
this module depends on those.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import pytest

from relay.store import open_store
from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
Tune = Callable[..., Awaitable[None]]


@pytest.fixture
async def http(relay: Relay) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as client:
        yield client


@pytest.fixture
async def tune(relay: Relay) -> AsyncIterator[Tune]:
    """Change the running directory's lifecycle settings for one test; the old values come back after it."""
    replaced: list[dict[str, Any]] = []

    async def apply(**changes: Any) -> None:
        replaced.append(await relay.directory.tune.remote(**changes))

    yield apply
    for previous in reversed(replaced):
        await relay.directory.tune.remote(**previous)


async def chat(http: httpx.AsyncClient, sid: str | None, text: str, user: str = "cycler") -> tuple[str, dict[str, Any]]:
    headers = {"X-User-Id": user} | ({"X-Session-Id": sid} if sid else {})
    body = {"messages": [{"role": "user", "content": text}], "stream_format": "json"}
    response = await http.post("/api/streaming/chat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.headers["x-session-id"], response.json()


@contextlib.asynccontextmanager
async def hanging(http: httpx.AsyncClient, sid: str | None, text: str) -> AsyncIterator[str]:
    """A turn that streams its first word and then hangs until the caller closes it; yields its session id."""
    body = {
        "session_id": sid,
        "provider_options": {"fault": "hang", "fault_after": 1},
        "messages": [{"role": "user", "content": text}],
        "stream_format": "ndjson",
    }
    async with http.stream("POST", "/api/streaming/chat", json=body, headers={"X-User-Id": "cycler"}) as response:
        lines = response.aiter_lines()
        while orjson.loads(await anext(lines))["type"] != "text-delta":
            pass
        yield response.headers["x-session-id"]


async def live(relay: Relay, *sids: str) -> list[bool]:
    return [await relay.directory.locate.remote(sid) is not None for sid in sids]


async def nothing_live(relay: Relay) -> None:
    """Start from no live session (a cancelled turn of an earlier test may still be finishing)."""

    async def passivate() -> int:
        await relay.directory.passivate_idle.remote(0.0)
        return int((await relay.directory.stats.remote())["live"])

    await await_until(passivate, timeout_s=60, interval_s=0.1, what="no live session", done=lambda count: count == 0)


async def test_the_live_cap_passivates_least_recently_used_idle_sessions(
    relay: Relay, http: httpx.AsyncClient, tune: Tune
) -> None:
    directory = relay.directory
    await nothing_live(relay)
    await tune(max_live_sessions=2)
    start = await directory.stats.remote()

    a, _ = await chat(http, None, "alpha")
    b, _ = await chat(http, None, "beta")
    await chat(http, a, "alpha again")  # b is now the least recently used
    c, _ = await chat(http, None, "gamma")
    assert await live(relay, a, b, c) == [True, False, True]
    stats = await directory.stats.remote()
    assert stats["live"] == 2 and stats["lru_passivations"] == start["lru_passivations"] + 1

    async with hanging(http, a, "hold the turn open"):
        # a's turn is running; a use of c makes a the least recently used, and busy
        await chat(http, c, "gamma again")
        d, _ = await chat(http, None, "delta")
        assert await live(relay, a, c, d) == [True, False, True]  # a skipped, the pass went on to c
        e, _ = await chat(http, None, "epsilon")
        assert await live(relay, a, d, e) == [True, False, True]
        stats = await directory.stats.remote()
        assert stats["live"] == 2 and stats["lru_passivations"] == start["lru_passivations"] + 3

    store = open_store(relay.store_url)
    runs = await await_until(
        lambda: asyncio.to_thread(store.runs, a),
        timeout_s=60,
        interval_s=0.1,
        what="the run to end",
        done=lambda runs: runs[-1]["status"] != "running",
    )
    assert runs[-1]["status"] == "cancelled" and runs[-1]["output"] == "hold "  # the caller closed the stream

    _, again = await chat(http, b, "beta again")  # reactivated from the store with its whole history
    assert again["usage"]["input_tokens"] == 4  # "beta" twice, then "beta again"
    assert (await directory.stats.remote())["live"] <= 2


async def test_the_idle_ttl_passivates_idle_sessions_by_the_timer(
    relay: Relay, http: httpx.AsyncClient, tune: Tune
) -> None:
    directory = relay.directory
    async with hanging(http, None, "busy all along") as busy:
        idle, _ = await chat(http, None, "idle soon")
        before = await directory.stats.remote()
        assert await live(relay, busy, idle) == [True, True]

        await tune(idle_ttl_s=1.0)
        await await_until(
            lambda: directory.locate.remote(idle),
            timeout_s=60,
            interval_s=0.1,
            what="the idle session passivated",
            done=lambda actor: actor is None,
        )
        # the same sweep saw the busy session (handed out earlier, so just as idle by the clock) and kept it
        assert await live(relay, busy) == [True]
        after = await directory.stats.remote()
        assert after["passivations"] > before["passivations"]
        assert after["lru_passivations"] == before["lru_passivations"]  # the timer did it, not the cap
    _, again = await chat(http, idle, "back again")
    assert again["usage"]["input_tokens"] == 6  # "idle soon" twice, then "back again"


async def test_retention_deletes_old_stored_sessions_and_keeps_live_ones(
    relay: Relay, http: httpx.AsyncClient, tune: Tune
) -> None:
    directory = relay.directory
    old, _ = await chat(http, None, "old news")
    kept, _ = await chat(http, None, "fresh news")
    await directory.evict.remote(old)  # passivated: stored only
    before = await directory.stats.remote()
    store = open_store(relay.store_url)

    await tune(retention_days=1e-9)  # every session untouched for ~0.1 ms is past retention
    await await_until(
        lambda: asyncio.to_thread(store.get_session, old),
        timeout_s=60,
        interval_s=0.1,
        what="the expired session deleted",
        done=lambda row: row is None,
    )
    assert store.messages(old) == [] and store.runs(old) == []
    assert store.get_session(kept) is not None and await live(relay, kept) == [True]  # live: kept
    assert (await directory.stats.remote())["expired"] > before["expired"]
    gone = await http.get(f"/api/sessions/{old}", headers={"X-User-Id": "cycler"})
    assert gone.status_code == 404
    _, again = await chat(http, kept, "still fresh")
    assert again["usage"]["input_tokens"] == 6  # its history survived: "fresh news" twice, then "still fresh"


STATUS_LINE = re.compile(r"sessions: (\d+) live on (\d+) actors \(cap (\d+)\), (\d+) passivated, (\d+) pooled actors")
COUNTED = ("live", "live_actors", "max_actors", "passivated", "pooled")


async def test_stats_and_relay_status_count_live_passivated_and_pooled(relay: Relay, http: httpx.AsyncClient) -> None:
    directory = relay.directory
    await nothing_live(relay)
    sids = [(await chat(http, None, f"count {i}"))[0] for i in range(3)]
    await directory.evict.remote(sids[0])
    store = open_store(relay.store_url)

    async def snapshot() -> dict[str, Any]:
        """The numbers from /api/stats and `relay status`, and the truth from the actors and the store."""
        first = await directory.stats.remote()
        api = (await http.get("/api/stats")).json()["sessions"]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "relay.cli", "status", "--url", relay.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        hosted = [await actor.hosted.remote() for actor in await directory.actors.remote()]
        stored = store.count_sessions()
        last = await directory.stats.remote()
        return {"first": first, "api": api, "status": done.stdout, "hosted": hosted, "stored": stored, "last": last}

    def settled(snap: dict[str, Any]) -> bool:  # the pool refills in the background; compare once it is still
        return snap["first"]["creating"] == 0 and all(snap["first"][k] == snap["last"][k] for k in COUNTED)

    snap = await await_until(snapshot, timeout_s=120, interval_s=0.1, what="the counters to settle", done=settled)
    api, hosted = snap["api"], snap["hosted"]
    assert api["live"] == sum(map(len, hosted)) == 2
    assert {sid for on_actor in hosted for sid in on_actor} == set(sids[1:])
    assert api["live_actors"] == sum(1 for on_actor in hosted if on_actor) == 2
    assert api["pooled"] == sum(1 for on_actor in hosted if not on_actor) >= 1  # sids[0]'s actor was recycled
    assert api["passivated"] == snap["stored"] - 2 and store.get_session(sids[0]) is not None
    match = STATUS_LINE.search(snap["status"])
    assert match, snap["status"]
    assert [int(n) for n in match.groups()] == [api[k] for k in COUNTED]
    assert f"live cap {api['max_live_sessions']}, warm pool {api['warm_pool_size']}" in snap["status"]


async def test_the_turns_of_a_live_session_go_straight_to_its_actor(relay: Relay, http: httpx.AsyncClient) -> None:
    """The ingress remembers where a live session runs: its later turns skip the directory (issue 17, lever 2)."""
    sid, _ = await chat(http, None, "first")
    before = await relay.directory.stats.remote()
    for text in ("second", "third"):
        await chat(http, sid, text)
    after = await relay.directory.stats.remote()
    assert after["lookups"] == before["lookups"]
    assert (await relay.directory.activations.remote([sid]))[sid] == 1
    # a moved session finds its way back through the directory, with its history
    assert await relay.directory.evict.remote(sid) is None
    _, answer = await chat(http, sid, "fourth")
    assert answer["usage"]["input_tokens"] > 0
    assert (await relay.directory.stats.remote())["lookups"] == after["lookups"] + 1
