"""A brand-new session is activated by its first chat: the directory places it and hands out an epoch, without
calling the actor (issue 17, lever 2). A placement passivated before its chat came is refused, never activated twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from actors.partitions import mint_session_id
from actors.session_actor import SessionMoved
from relay.request import ChatRequest
from tests.integration.conftest import Relay

pytestmark = pytest.mark.integration

USER = "epoch"


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as client:
        yield client


async def send(http: httpx.AsyncClient, sid: str | None, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"stream_format": "json", "messages": [{"role": "user", "content": text}]}
    if sid is not None:
        body["session_id"] = sid
    response = await http.post("/api/streaming/chat", json=body, headers={"X-User-Id": USER})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def hosts(relay: Relay, sid: str) -> int:
    on_actors: Counter[str] = Counter()
    for actor in await relay.directory.actors.remote():
        on_actors.update(await actor.hosted.remote())
    return on_actors[sid]


async def test_a_new_sessions_first_chat_activates_it(relay: Relay, http: httpx.AsyncClient) -> None:
    before = await relay.directory.stats.remote()
    reply = await send(http, None, "hello")
    sid = reply["session_id"]
    after = await relay.directory.stats.remote()
    assert reply["content"] == "hello"
    assert after["lookups"] == before["lookups"] + 1  # one directory call, and the actor's activation rode the chat
    assert (await relay.directory.activations.remote([sid]))[sid] == 1
    assert await hosts(relay, sid) == 1
    assert (await send(http, sid, "again"))["content"] == "again"


async def test_a_stale_placement_is_refused_and_the_session_is_activated_once(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    sid = mint_session_id()
    actor, epoch = await relay.directory.place.remote(sid, USER)
    await relay.directory.evict.remote(sid)  # passivated before its first chat: the actor retires the epoch
    late = actor.chat.remote(
        sid, ChatRequest(provider="echo", messages=[{"role": "user", "content": "late"}]), (USER, epoch)
    )
    with pytest.raises(SessionMoved):
        await (await anext(late))
    assert await hosts(relay, sid) == 0
    # the next turn finds the session through the directory, which activates it once, from the store
    assert (await send(http, sid, "after"))["content"] == "after"
    assert (await relay.directory.activations.remote([sid]))[sid] == 1
    assert await hosts(relay, sid) == 1
