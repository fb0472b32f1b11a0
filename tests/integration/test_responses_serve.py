"""``/v1/responses`` and ``/v1/conversations`` through the Serve app: ingress, directory, session actors, pools.

CI runs this file on SQLite and again on PostgreSQL (``RELAY_TEST_STORE=postgres``). Each test is its own user.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration


def someone() -> str:
    return f"resp-{uuid.uuid4().hex[:8]}"


def sdk(relay: Relay, user: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=relay.url + "/v1", api_key="unused", default_headers={"X-User-Id": user}, max_retries=0, timeout=60
    )


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The data objects of an SSE body, one by one as they arrive."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield orjson.loads(line[6:])


def upstream_contexts(relay: Relay, last: str) -> list[list[str]]:
    """The message texts of each call the fake OpenAI upstream got whose last message is ``last``."""
    out = []
    for record in list(relay.upstream.requests):
        messages = record["body"]["messages"]
        texts = [m["content"] if isinstance(m["content"], str) else "" for m in messages]
        if texts and texts[-1] == last:
            out.append(texts)
    return out


async def test_create_stream_chain_branch_and_owner(relay: Relay) -> None:
    user = someone()
    client = sdk(relay, user)
    plain = await client.responses.create(model="echo", input="serve answers this")
    assert plain.status == "completed" and plain.output_text == "serve answers this"
    async with client.responses.stream(model="echo", input="serve streams this") as stream:
        kinds = [event.type async for event in stream]
        streamed = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert streamed.output_text == "serve streams this"
    assert (await client.responses.retrieve(streamed.id)).output_text == "serve streams this"

    # A chain on the fake upstream: each turn sends only its new input; the upstream sees the whole chain.
    tag = uuid.uuid4().hex[:6]
    root = await client.responses.create(model="up", input=f"root {tag}")
    two = await client.responses.create(model="up", input=f"two {tag}", previous_response_id=root.id)
    three = await client.responses.create(model="up", input=f"three {tag}", previous_response_id=two.id)
    assert three.previous_response_id == two.id
    assert upstream_contexts(relay, f"three {tag}") == [
        [f"root {tag}", root.output_text, f"two {tag}", two.output_text, f"three {tag}"]
    ]
    # A branch from the root: its context is exactly the root's chain, not the session's latest turns.
    branch = await client.responses.create(model="up", input=f"branch {tag}", previous_response_id=root.id)
    assert upstream_contexts(relay, f"branch {tag}") == [[f"root {tag}", root.output_text, f"branch {tag}"]]
    listed = await client.responses.input_items.list(branch.id, order="asc")
    assert [item.content[0].text for item in listed.data] == [f"root {tag}", root.output_text, f"branch {tag}"]

    # Another user's response is a 404 everywhere, and cannot be chained to.
    other = sdk(relay, someone())
    for call in (
        lambda: other.responses.retrieve(root.id),
        lambda: other.responses.input_items.list(root.id),
        lambda: other.responses.cancel(root.id),
        lambda: other.responses.delete(root.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await call()
    with pytest.raises(openai.BadRequestError) as chained:
        await other.responses.create(model="echo", input="x", previous_response_id=root.id)
    assert chained.value.body["code"] == "previous_response_not_found"
    await client.responses.delete(branch.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(branch.id)


async def test_background_resumes_after_a_dropped_connection_with_exact_text(relay: Relay) -> None:
    user = someone()
    client = sdk(relay, user)
    text = " ".join(f"w{i}" for i in range(30))
    # Paced so that the first reader drops while the run is live; the resume then follows it live.
    created = await client.responses.create(
        model="echo", input=text, background=True, extra_body={"provider_options": {"tokens_per_s": 10}}
    )
    assert created.status == "queued"
    path = f"/v1/responses/{created.id}"
    seen: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=relay.url, headers={"X-User-Id": user}, timeout=60) as http:
        async with http.stream("GET", path, params={"stream": "true"}) as response:
            assert response.status_code == 200
            async for event in sse(response):
                seen.append(event)
                if sum(e["type"] == "response.output_text.delta" for e in seen) == 3:
                    break  # the connection drops here, mid-run
        assert (await client.responses.retrieve(created.id)).status in ("queued", "in_progress")
        last = seen[-1]["sequence_number"]
        params = {"stream": "true", "starting_after": str(last)}
        async with http.stream("GET", path, params=params) as response:
            rest = [event async for event in sse(response)]
    events = seen + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))  # each number once, none missing
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == text
    final = await client.responses.retrieve(created.id)
    assert final.status == "completed" and final.output_text == text


async def test_cancel_reaches_a_running_background_run_and_is_idempotent(relay: Relay) -> None:
    user = someone()
    client = sdk(relay, user)
    # Echo sends two tokens and then hangs until cancelled: the upstream call is in flight when cancel lands.
    options = {"provider_options": {"fault": "hang", "fault_after": 2}}
    created = await client.responses.create(model="echo", input="a b c d e f", background=True, extra_body=options)
    async with (
        httpx.AsyncClient(base_url=relay.url, headers={"X-User-Id": user}, timeout=60) as http,
        http.stream("GET", f"/v1/responses/{created.id}", params={"stream": "true"}) as response,
    ):
        events = sse(response)
        deltas = 0
        async for event in events:
            deltas += event["type"] == "response.output_text.delta"
            if deltas == 2:
                break
        cancelled = await client.responses.cancel(created.id)
        assert cancelled.id == created.id and cancelled.status == "cancelled"
        # the live stream that was following the run ends with its terminal event
        terminal = [event async for event in events][-1]
    assert terminal["type"] == "response.failed" and terminal["response"]["status"] == "cancelled"
    stored = await await_until(
        lambda: client.responses.retrieve(created.id),
        timeout_s=60,
        what="the cancelled run stored",
        done=lambda response: response.status != "in_progress",
    )
    assert stored.status == "cancelled" and stored.output_text == "a b "
    again = await client.responses.cancel(created.id)
    assert again.status == "cancelled" and again.output_text == stored.output_text


async def test_every_conversations_call(relay: Relay) -> None:
    user = someone()
    client = sdk(relay, user)
    conversation = await client.conversations.create(
        items=[{"role": "user", "content": "remember blue"}], metadata={"topic": "colours"}
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "colours"}
    assert (await client.conversations.retrieve(conversation.id)).id == conversation.id
    updated = await client.conversations.update(conversation.id, metadata={"topic": "paint"})
    assert updated.metadata == {"topic": "paint"}
    added = await client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "and green"}]
    )
    [note] = added.data
    assert note.id and note.status == "completed"
    reply = await client.responses.create(model="echo", input="what colours?", conversation=conversation.id)
    assert reply.conversation is not None and reply.conversation.id == conversation.id
    assert reply.output_text == "what colours?"
    items = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert [item.content[0].text for item in items] == ["remember blue", "and green", "what colours?", "what colours?"]
    fetched = await client.conversations.items.retrieve(note.id, conversation_id=conversation.id)
    assert fetched.id == note.id
    parent = await client.conversations.items.delete(note.id, conversation_id=conversation.id)
    assert parent.id == conversation.id
    remaining = (await client.conversations.items.list(conversation.id)).data
    assert note.id not in [item.id for item in remaining]
    # A conversation is a session: Relay's session routes see it, and another user does not.
    async with httpx.AsyncClient(base_url=relay.url, timeout=60) as http:
        mine = await http.get("/api/sessions", headers={"X-User-Id": user})
        assert conversation.id in [s["session_id"] for s in mine.json()["data"]]
        theirs = await http.get(f"/v1/conversations/{conversation.id}", headers={"X-User-Id": someone()})
        assert theirs.status_code == 404
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)
