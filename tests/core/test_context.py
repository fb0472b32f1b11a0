"""Context building: the history budget, rolling summaries that never hold a turn back, cross-session memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.config import ContextSettings, ProviderConfig, RelaySettings
from relay.request import ChatRequest
from relay.session.context import parse_facts, parse_summary, split_history
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import FakeOpenAI


def turns(n: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = [{"role": "system", "content": "Be kind."}]
    for i in range(n):
        history += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    return history


def test_split_history_by_runs_and_by_tokens() -> None:
    history = [*turns(5), {"role": "user", "content": "question 5"}]
    older, recent = split_history(history, max_runs=2, max_tokens=None)
    assert [m["content"] for m in recent] == ["question 4", "answer 4", "question 5"]
    assert len(older) == 8 and all(m["role"] != "system" for m in older + recent)
    _, tiny = split_history(history, max_runs=None, max_tokens=1)
    assert tiny == [{"role": "user", "content": "question 5"}]  # the newest user turn is always sent
    assert split_history(history, None, None)[0] == []


def test_lenient_parsing_of_side_replies() -> None:
    assert parse_summary('Sure! {"summary": "They met.", "topics": ["intro", ""]}') == ("They met.", ["intro"])
    assert parse_summary("plain text summary") == ("plain text summary", [])
    assert parse_facts('{"facts": ["likes tea."]}') == ["likes tea"]
    assert parse_facts("lives in Oslo\n\nhas a dog") == ["lives in Oslo", "has a dog"]


@pytest.fixture
def upstream(fake_openai: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    fake_openai[0].reset()
    return fake_openai


def backend(tmp_path: Path, upstream_url: str, **context: Any) -> LocalBackend:
    providers = [
        ProviderConfig(provider_id="up", provider_type="openai_compatible", model="fake", base_url=upstream_url),
        ProviderConfig(provider_id="scribe", provider_type="echo"),
        ProviderConfig(provider_id="slow-scribe", provider_type="echo", options={"ttft_ms": 1500}),
    ]
    return LocalBackend(
        RelaySettings(store_url=f"sqlite:///{tmp_path}/r.db", providers=providers, context=ContextSettings(**context))
    )


async def send(relay: LocalBackend, session_id: str | None, text: str, user: str = "u1", **kw: Any) -> tuple[str, list]:
    request = ChatRequest(provider="up", model="fake", messages=[{"role": "user", "content": text}], **kw)
    turn = await relay.open_run(session_id=session_id, user_id=user, request=request)
    return turn.session_id, [event async for batch in turn.batches for event in batch]


async def test_older_turns_are_summarized_and_sent_before_the_recent_ones(
    tmp_path: Path, upstream: tuple[FakeOpenAI, str]
) -> None:
    fake, url = upstream
    relay = backend(tmp_path, url, history_max_runs=2, summary_provider="scribe", summary_wait_s=30)
    sid, _ = await send(relay, None, "my dog is called Rex")
    for text in ("second", "third"):
        await send(relay, sid, text)
    _, events = await send(relay, sid, "fourth")
    assert [e["status"] for e in events if e["type"] == "status"] == ["started", "summarizing"]
    sent = fake.requests[-1]["body"]["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith("Summary of the earlier conversation")
    assert "my dog is called Rex" in sent[0]["content"]  # echo summarizes by repeating the transcript
    assert [m["content"].strip() for m in sent[1:]] == ["third", "third", "fourth"]
    stored = relay.store.get_session(sid)
    assert stored is not None and "Rex" in stored["summary"] and stored["summary_seq"] == 4


async def test_a_slow_summary_never_holds_the_turn_back(tmp_path: Path, upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    relay = backend(tmp_path, url, history_max_runs=1, summary_provider="slow-scribe", summary_wait_s=0.05)
    sid, _ = await send(relay, None, "first")
    _, events = await send(relay, sid, "second")
    assert events[-1]["type"] == "finish" and events[-1]["reason"] == "stop"
    assert relay.store.get_session(sid)["summary"] is None  # type: ignore[index]  # the reply came first
    assert not any(m["content"].startswith("Summary") for m in fake.requests[-1]["body"]["messages"])
    await relay.sessions[sid].settled()
    assert "first" in relay.store.get_session(sid)["summary"]  # type: ignore[index]


async def test_facts_carry_to_the_users_next_session_unless_turned_off(
    tmp_path: Path, upstream: tuple[FakeOpenAI, str]
) -> None:
    fake, url = upstream
    relay = backend(tmp_path, url, memory_provider="scribe")
    sid, _ = await send(relay, None, "I live in Oslo")
    await relay.sessions[sid].settled()
    assert [m["content"] for m in relay.store.memories("u1")] == ["I live in Oslo"]

    second, _ = await send(relay, None, "what's the weather?")
    system = [m["content"] for m in fake.requests[-1]["body"]["messages"] if m["role"] == "system"]
    assert system == ["What you know about this user:\n- I live in Oslo"]
    await relay.sessions[second].settled()  # echo, as the extractor, takes every message for a fact

    other, _ = await send(relay, None, "hello", memory=False)
    assert all(m["role"] != "system" for m in fake.requests[-1]["body"]["messages"])
    await relay.sessions[other].settled()
    assert len(relay.store.memories("u1")) == 2  # a turn with memory off is not remembered either
    await send(relay, None, "hi", user="u2")
    assert all(m["role"] != "system" for m in fake.requests[-1]["body"]["messages"])
