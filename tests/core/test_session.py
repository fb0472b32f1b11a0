"""The session's run logic on a fake stream opener: no HTTP, no provider, no Ray.

The opener stands in for a provider pool: it records the context each call carried and answers with scripted
events, and tests hold it on an ``asyncio.Event`` to order concurrent runs (never a sleep).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.config import ContextSettings
from relay.errors import Conflict
from relay.events import finish, text_delta, usage
from relay.request import ChatRequest
from relay.session.session import Session
from relay.store import SQLiteStore, Store
from relay.tools import ToolSet, tool_from_function
from relay.types import Batch
from tests.waiting import await_until


class FakePool:
    """Answers every call with "reply N"; ``hold`` keeps a call open until released; ``seen`` is each context."""

    def __init__(self, store: Store | None = None, session_id: str = "") -> None:
        self.seen: list[list[dict[str, Any]]] = []
        self.stored_at_call: list[int] = []
        self.store, self.session_id = store, session_id
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.closed = 0
        self.script: list[Batch] | None = None

    async def __call__(self, request: ChatRequest) -> AsyncIterator[Batch]:
        self.seen.append(list(request.messages))  # the steps go on appending to theirs
        if self.store is not None:
            self.stored_at_call.append(self.store.count_messages(self.session_id))
        self.entered.set()
        try:
            if self.script is not None:
                yield self.script.pop(0)
                return
            yield [text_delta(f"reply {len(self.seen)}")]
            if self.hold is not None:
                await self.hold.wait()
            yield [usage(3, 2), finish("stop")]
        finally:
            self.closed += 1


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "relay.db")


def session(store: Store, **context: Any) -> Session:
    store.create_session("ada", "sess_1")
    return Session(store, "sess_1", "ada", ContextSettings(**context))


def ask(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(provider="fake", messages=[{"role": "user", "content": text}], **fields)


async def run(s: Session, request: ChatRequest, pool: FakePool) -> list[dict[str, Any]]:
    return [event async for batch in s.chat(request, pool) for event in batch]


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] != "system"]


async def test_the_user_message_is_durable_before_the_provider_is_called(store: Store) -> None:
    s = session(store)
    pool = FakePool(store, "sess_1")
    events = await run(s, ask("hi"), pool)
    assert pool.stored_at_call == [1]  # the user message was in the store when the pool was called
    assert events[-1]["type"] == "finish" and events[-1]["reason"] == "stop" and events[-1]["run_id"]
    run_row = store.runs("sess_1")[0]
    assert (run_row["status"], run_row["output"], run_row["usage"]) == (
        "completed",
        "reply 1",
        {"input_tokens": 3, "output_tokens": 2},
    )


async def test_concurrent_runs_queue_first_in_first_out_and_past_the_bound_get_a_409(store: Store) -> None:
    s = session(store, max_queued_runs=2)
    pool = FakePool()
    pool.hold = asyncio.Event()
    first = asyncio.create_task(run(s, ask("one"), pool))
    await pool.entered.wait()
    second = asyncio.create_task(run(s, ask("two"), pool))
    await await_until(lambda: s.runs_waiting == 2, timeout_s=5, what="the second run to queue")
    with pytest.raises(Conflict) as busy:
        await run(s, ask("three"), pool)
    assert busy.value.status_code == 409 and busy.value.code == "conversation_busy"
    pool.hold.set()
    await asyncio.gather(first, second)
    # the second run saw the first whole: never interleaved
    assert texts(pool.seen[1]) == ["one", "reply 1", "two"]


async def test_a_branch_sees_exactly_the_chain_of_its_parent(store: Store) -> None:
    s = session(store)
    pool = FakePool()
    await run(s, ask("one", run_id="resp_a"), pool)
    await run(s, ask("two", run_id="resp_b", parent_run_id="resp_a"), pool)
    await run(s, ask("three", run_id="resp_c", parent_run_id="resp_b"), pool)
    await run(s, ask("branch", run_id="resp_d", parent_run_id="resp_a"), pool)
    assert texts(pool.seen[-1]) == ["one", "reply 1", "branch"]
    # the head moved to the branch; continuing the old head reads its chain from the store
    await run(s, ask("four", run_id="resp_e", parent_run_id="resp_c"), pool)
    assert texts(pool.seen[-1]) == ["one", "reply 1", "two", "reply 2", "three", "reply 3", "four"]
    assert store.run_chain("sess_1", "resp_d") == ["resp_a", "resp_d"]


async def test_instructions_lead_one_run_and_are_never_stored(store: Store) -> None:
    s = session(store)
    pool = FakePool()
    await run(s, ask("one", instructions="be brief"), pool)
    await run(s, ask("two"), pool)
    assert pool.seen[0][0] == {"role": "system", "content": "be brief"}
    assert all(m.get("content") != "be brief" for m in pool.seen[1])
    assert all(m.get("content") != "be brief" for m in store.messages("sess_1"))


async def test_store_false_keeps_nothing_and_leaves_the_history_alone(store: Store) -> None:
    s = session(store)
    pool = FakePool()
    await run(s, ask("kept"), pool)
    await run(s, ask("secret", store=False), pool)
    await run(s, ask("next"), pool)
    assert texts(pool.seen[-1]) == ["kept", "reply 1", "next"]
    assert [m["content"] for m in store.messages("sess_1")] == ["kept", "reply 1", "next", "reply 3"]
    assert len(store.runs("sess_1")) == 2


async def test_cancel_stops_the_provider_call_and_records_the_run_cancelled(store: Store) -> None:
    s = session(store)
    pool = FakePool()
    pool.hold = asyncio.Event()
    running = asyncio.create_task(run(s, ask("long", run_id="resp_x"), pool))
    await pool.entered.wait()
    assert s.cancel("resp_x") and not s.cancel("resp_unknown")
    with pytest.raises(asyncio.CancelledError):
        await running
    assert pool.closed == 1
    assert store.get_run("resp_x")["status"] == "cancelled"


async def test_steps_run_a_server_tool_then_answer_and_report_the_served_target(store: Store) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    call = {"type": "tool-call-start", "index": 0, "tool_call_id": "call_1", "name": "add"}
    end = {"type": "tool-call-end", "index": 0, "tool_call_id": "call_1", "name": "add", "arguments": '{"a":2,"b":3}'}
    pool = FakePool()
    pool.script = [[call, end, finish("tool_calls")], [text_delta("5"), finish("stop")]]
    s = session(store)
    request = ask("2+3?", tools=ToolSet((tool_from_function(add),), max_steps=4))
    events = await run(s, request, pool)
    kinds = [e["type"] for e in events]
    assert "tool-execution-end" in kinds and kinds[-1] == "finish" and events[-1]["reason"] == "stop"
    assert pool.seen[1][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    assert events[-1]["metrics"]["provider"] == "fake"
    assert store.runs("sess_1")[0]["output"] == "5"


async def test_steps_stop_at_max_steps_with_a_warning_and_finish_length(store: Store) -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    again = [
        {"type": "tool-call-start", "index": 0, "tool_call_id": "c", "name": "ping"},
        {"type": "tool-call-end", "index": 0, "tool_call_id": "c", "name": "ping", "arguments": "{}"},
        finish("tool_calls"),
    ]
    pool = FakePool()
    pool.script = [list(again), list(again)]
    s = session(store)
    events = await run(s, ask("loop", tools=ToolSet((tool_from_function(ping),), max_steps=2)), pool)
    assert any(e["type"] == "warning" and e["code"] == "max_steps" for e in events)
    assert events[-1]["reason"] == "length"
    assert store.runs("sess_1")[0]["finish_reason"] == "length"


async def test_a_run_that_keeps_nothing_still_gets_the_sessions_summary(store: Store) -> None:
    """``store: false`` keeps nothing, but its context is the session's like any other run's, summary included."""
    s = session(store, history_max_runs=1, summary_provider="fake", summary_wait_s=30)
    pool = FakePool()
    await run(s, ask("one"), pool)
    await run(s, ask("two"), pool)
    await run(s, ask("secret", store=False), pool)
    notes = [m["content"] for m in pool.seen[-1] if m["role"] == "system"]
    assert any(note.startswith("Summary of the earlier conversation: reply") for note in notes), notes
