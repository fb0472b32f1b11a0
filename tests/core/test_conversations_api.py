"""The Conversations API through the real openai SDK (3.60) against an in-process server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread

ALICE = {"X-User-Id": "alice"}
MALLORY = {"X-User-Id": "mallory"}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> LocalBackend:
    url = f"sqlite:///{tmp_path}/r.db" if request.param == "sqlite" else str(request.getfixturevalue("fresh_pg_url"))
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    return LocalBackend(RelaySettings(store_url=url, providers=[echo]))


@pytest.fixture
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


def _client(server: str, headers: dict[str, str]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0, default_headers=headers)


@pytest.fixture
async def alice(server: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _client(server, ALICE) as client:
        yield client


@pytest.fixture
async def mallory(server: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _client(server, MALLORY) as client:
        yield client


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server) as client:
        yield client


def _turn(n: int) -> list[dict[str, Any]]:
    """A user question, the assistant's text and call, and the call's output: 4 items, 3 messages."""
    return [
        {"role": "user", "content": f"question {n}"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"answer {n}"}]},
        {"type": "function_call", "call_id": f"call_{n}", "name": "lookup", "arguments": f'{{"n": {n}}}'},
        {"type": "function_call_output", "call_id": f"call_{n}", "output": f"result {n}"},
    ]


async def test_create_retrieve_update_delete(alice: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    created = await alice.conversations.create(items=_turn(1), metadata={"topic": "demo"})
    assert created.id.startswith("conv_") and len(created.id) == len("conv_") + 32
    assert created.object == "conversation" and created.metadata == {"topic": "demo"}
    assert isinstance(created.created_at, int)

    fetched = await alice.conversations.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()

    updated = await alice.conversations.update(created.id, metadata={"topic": "other", "lang": "en"})
    assert updated.metadata == {"topic": "other", "lang": "en"} and updated.id == created.id
    cleared = await alice.conversations.update(created.id, metadata=None)
    assert cleared.metadata == {}

    # One id space: the conversation is the caller's session, visible through the session API.
    session = (await http.get(f"/api/sessions/{created.id}", headers=ALICE)).json()
    assert session["session_id"] == created.id and session["user_id"] == "alice"
    stored = (await http.get(f"/api/sessions/{created.id}/messages", headers=ALICE)).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool"]
    assert stored[1]["content"] == "answer 1" and stored[1]["tool_calls"][0]["id"] == "call_1"

    deleted = await alice.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        await alice.conversations.retrieve(created.id)
    assert (await http.get(f"/api/sessions/{created.id}", headers=ALICE)).status_code == 404


async def test_a_conversation_without_items_or_metadata(alice: openai.AsyncOpenAI) -> None:
    created = await alice.conversations.create()
    assert created.metadata == {}
    page = await alice.conversations.items.list(created.id)
    assert page.data == [] and page.has_more is False and page.last_id is None


async def test_items_create_retrieve_and_delete(alice: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    conversation = await alice.conversations.create(items=[{"role": "user", "content": "hi"}])
    added = await alice.conversations.items.create(conversation.id, items=_turn(2))
    assert [item.type for item in added.data] == ["message", "message", "function_call", "function_call_output"]
    assert all(item.status == "completed" for item in added.data)
    user, assistant, call, output = added.data
    assert user.type == "message" and user.role == "user" and user.content[0].type == "input_text"
    assert assistant.type == "message" and assistant.role == "assistant"
    assert assistant.content[0].type == "output_text" and assistant.content[0].text == "answer 2"
    assert call.type == "function_call" and (call.call_id, call.name, call.arguments) == (
        "call_2",
        "lookup",
        '{"n": 2}',
    )
    assert output.type == "function_call_output" and output.call_id == "call_2" and output.output == "result 2"
    assert added.first_id == user.id and added.last_id == output.id and added.has_more is False

    # An output may answer a call made earlier in the conversation.
    later = await alice.conversations.items.create(
        conversation.id, items=[{"type": "function_call_output", "call_id": "call_2", "output": "again"}]
    )
    assert later.data[0].type == "function_call_output"

    fetched = await alice.conversations.items.retrieve(call.id, conversation_id=conversation.id)
    assert fetched.model_dump() == call.model_dump()

    # Deleting an item deletes the message row that holds it: the assistant text and its call go together.
    parent = await alice.conversations.items.delete(call.id, conversation_id=conversation.id)
    assert parent.object == "conversation" and parent.id == conversation.id
    for gone in (call.id, assistant.id):
        with pytest.raises(openai.NotFoundError) as missing:
            await alice.conversations.items.retrieve(gone, conversation_id=conversation.id)
        assert gone in missing.value.message
    remaining = [item.id async for item in alice.conversations.items.list(conversation.id, order="asc")]
    assert remaining == [remaining[0], user.id, output.id, later.data[0].id]
    stored = (await http.get(f"/api/sessions/{conversation.id}/messages", headers=ALICE)).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "user", "tool", "tool"]


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_items_page_by_after_in_both_orders(alice: openai.AsyncOpenAI, order: str) -> None:
    conversation = await alice.conversations.create(items=_turn(1) + _turn(2))
    await alice.conversations.items.create(conversation.id, items=_turn(3))
    everything = await alice.conversations.items.list(conversation.id, order=order, limit=100)  # type: ignore[arg-type]
    ids = [item.id for item in everything.data]
    assert len(ids) == 12 and everything.has_more is False
    ascending = list(reversed(ids)) if order == "desc" else ids
    assert ascending[:4] == [ascending[0], ascending[1], ascending[2], ascending[3]]
    assert [i.split("_")[0] for i in ascending[:4]] == ["msg", "msg", "fc", "fco"]

    first = await alice.conversations.items.list(conversation.id, order=order, limit=5)  # type: ignore[arg-type]
    assert [item.id for item in first.data] == ids[:5] and first.has_more is True
    assert (first.first_id, first.last_id) == (ids[0], ids[4])
    # The SDK pages with after=last_id while has_more; every limit splits some assistant row between pages.
    for limit in (1, 2, 3, 5):
        paged = [
            item.id
            async for item in alice.conversations.items.list(conversation.id, order=order, limit=limit)  # type: ignore[arg-type]
        ]
        assert paged == ids
    last = await alice.conversations.items.list(conversation.id, order=order, after=ids[-2], limit=5)  # type: ignore[arg-type]
    assert [item.id for item in last.data] == ids[-1:] and last.has_more is False


async def test_another_users_conversation_is_not_found(
    alice: openai.AsyncOpenAI, mallory: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    conversation = await alice.conversations.create(items=_turn(1), metadata={"secret": "yes"})
    item = (await alice.conversations.items.list(conversation.id)).data[0]
    calls = [
        mallory.conversations.retrieve(conversation.id),
        mallory.conversations.update(conversation.id, metadata={"x": "y"}),
        mallory.conversations.delete(conversation.id),
        mallory.conversations.items.list(conversation.id),
        mallory.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}]),
        mallory.conversations.items.retrieve(item.id, conversation_id=conversation.id),
        mallory.conversations.items.delete(item.id, conversation_id=conversation.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as missing:
            await call
        assert missing.value.body == {
            "message": f"Conversation with id '{conversation.id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    assert (await http.get(f"/api/sessions/{conversation.id}", headers=MALLORY)).status_code == 404
    assert (await alice.conversations.retrieve(conversation.id)).metadata == {"secret": "yes"}
    assert len((await alice.conversations.items.list(conversation.id)).data) == 4


@pytest.mark.parametrize("conversation_id", ["conv_nope", "sess_0123", "not-an-id"])
async def test_unknown_and_malformed_ids_are_not_found(alice: openai.AsyncOpenAI, conversation_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await alice.conversations.retrieve(conversation_id)
    assert missing.value.body["message"] == f"Conversation with id '{conversation_id}' not found."  # type: ignore[index]


async def test_a_session_is_not_a_conversation(alice: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    session_id = (await http.post("/api/sessions", json={}, headers=ALICE)).json()["session_id"]
    assert session_id.startswith("sess_")
    with pytest.raises(openai.NotFoundError):
        await alice.conversations.items.list(session_id)


async def test_unknown_items_are_not_found(alice: openai.AsyncOpenAI) -> None:
    conversation = await alice.conversations.create(items=[{"role": "user", "content": "hi"}])
    other = await alice.conversations.create(items=[{"role": "user", "content": "elsewhere"}])
    foreign = (await alice.conversations.items.list(other.id)).data[0].id
    for item_id in ("msg_999999", "fc_1_0", "rs_1", foreign):
        with pytest.raises(openai.NotFoundError) as missing:
            await alice.conversations.items.retrieve(item_id, conversation_id=conversation.id)
        assert missing.value.body["message"] == f"Item with id '{item_id}' not found."  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await alice.conversations.items.delete(item_id, conversation_id=conversation.id)


async def test_bad_input_is_a_400_naming_the_field(alice: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    conversation = await alice.conversations.create()
    cid = conversation.id
    user = {"role": "user", "content": "x"}
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/conversations", {"items": [user] * 3 + [{"role": "wizard", "content": "x"}]}, "items[3].role"),
        ("POST", "/v1/conversations", {"items": [user] * 21}, "items"),
        ("POST", "/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ("POST", "/v1/conversations", {"metadata": {"k": "v" * 513}}, "metadata"),
        (
            "POST",
            "/v1/conversations",
            {"items": [{"type": "function_call_output", "call_id": "c"}]},
            "items[0].call_id",
        ),
        ("POST", f"/v1/conversations/{cid}", {}, "metadata"),
        ("POST", f"/v1/conversations/{cid}", {"metadata": {"k" * 65: "v"}}, "metadata"),
        ("POST", f"/v1/conversations/{cid}/items", {}, "items"),
        ("POST", f"/v1/conversations/{cid}/items", {"items": [user] * 21}, "items"),
        (
            "POST",
            f"/v1/conversations/{cid}/items",
            {"items": [{"type": "function_call", "name": "f"}]},
            "items[0].call_id",
        ),
        ("GET", f"/v1/conversations/{cid}/items?limit=0", {}, "limit"),
        ("GET", f"/v1/conversations/{cid}/items?limit=101", {}, "limit"),
        ("GET", f"/v1/conversations/{cid}/items?order=sideways", {}, "order"),
        ("GET", f"/v1/conversations/{cid}/items?after=nope", {}, "after"),
    ]
    for method, path, body, param in cases:
        answer = await http.request(method, path, json=body if method == "POST" else None, headers=ALICE)
        assert answer.status_code == 400, (path, body, answer.text)
        assert answer.json()["error"]["param"] == param, (path, body, answer.text)
    # Nothing half-written: the refused creates made no conversation, the refused appends added no item.
    assert (await alice.conversations.items.list(cid)).data == []
    sessions = (await http.get("/api/sessions", headers=ALICE)).json()["data"]
    assert [s["session_id"] for s in sessions] == [cid]

    # Through the SDK too, and an item_reference names its field; the server keeps serving.
    with pytest.raises(openai.BadRequestError) as bad:
        await alice.conversations.items.create(cid, items=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item]
    assert bad.value.param == "items[0].role"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError) as reference:
        await alice.conversations.items.create(cid, items=[{"type": "item_reference", "id": "msg_1"}])
    assert reference.value.body["param"] == "items[0].id"  # type: ignore[index]
    assert (await alice.conversations.retrieve(cid)).id == cid


async def test_writing_items_while_a_turn_runs_is_a_conflict(alice: openai.AsyncOpenAI, backend: LocalBackend) -> None:
    conversation = await alice.conversations.create(items=[{"role": "user", "content": "hi"}])
    item = (await alice.conversations.items.list(conversation.id)).data[0]
    session = await backend._activate(conversation.id, "alice")
    session.runs_waiting += 1  # what Session.chat holds for the length of a turn
    try:
        with pytest.raises(openai.ConflictError):
            await alice.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.ConflictError):
            await alice.conversations.items.delete(item.id, conversation_id=conversation.id)
        with pytest.raises(openai.ConflictError):
            await alice.conversations.delete(conversation.id)
    finally:
        session.runs_waiting -= 1
    added = await alice.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}])
    assert conversation.id not in backend.sessions  # evicted: the next turn reads the history from the store
    assert len(added.data) == 1


async def test_a_turn_on_the_conversation_sees_its_items(alice: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    conversation = await alice.conversations.create(items=[{"role": "user", "content": "first"}])
    body = {"model": "echo", "messages": [{"role": "user", "content": "second"}]}
    headers = ALICE | {"X-Session-Id": conversation.id}
    assert (await http.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
    await alice.conversations.items.create(conversation.id, items=[{"role": "user", "content": "third"}])
    texts = [
        part.text  # type: ignore[union-attr]
        async for item in alice.conversations.items.list(conversation.id, order="asc")
        if item.type == "message"
        for part in item.content
    ]
    assert texts == ["first", "second", "second", "third"]
