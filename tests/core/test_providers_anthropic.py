"""Anthropic specifics the matrix does not cover: headers, 529 retries, timeouts, Retry-After, usage, thinking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.errors import InvalidRequest, Overloaded, ProviderTimeout, RateLimited
from relay.http.app import build_app
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest
from relay.session.local_backend import LocalBackend
from tests.cases import WEATHER_TOOL, create_adapter
from tests.fakes.anthropic_upstream import FakeAnthropic, ServerThread, signature

THOUGHT = "Let me think about this."
THINKING = {"type": "enabled", "budget_tokens": 1024}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "P",
        "schema": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
    },
}


@pytest.fixture
def upstream(fake_anthropic: tuple[FakeAnthropic, str]) -> tuple[FakeAnthropic, str]:
    fake_anthropic[0].reset()
    return fake_anthropic


def config(url: str, **kw: Any) -> ProviderConfig:
    fields = {"provider_id": "claude", "provider_type": "anthropic", "model": "fake-claude", "base_url": url}
    return ProviderConfig(**(fields | {"api_key": "sk-ant-test"} | kw))


def request(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest(provider="claude", messages=[{"role": "user", "content": text}], **kw)


async def events(adapter: Any, req: ChatRequest) -> list[dict[str, Any]]:
    return [event async for event in adapter.stream_chat(req)]


async def test_version_header_default_max_tokens_and_options(upstream: tuple[FakeAnthropic, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(config(url, default_max_tokens=321, default_headers={"anthropic-beta": "x-1"}))
    out = await events(adapter, request("a b c", params={"stop": ["c"], "top_k": 5}, user="u-9"))
    sent = fake.requests[-1]
    assert sent["headers"]["anthropic-version"] and sent["headers"]["anthropic-beta"] == "x-1"
    assert sent["body"]["max_tokens"] == 321 and sent["body"]["stop_sequences"] == ["c"]
    assert sent["body"]["top_k"] == 5 and sent["body"]["metadata"] == {"user_id": "u-9"}
    assert "".join(e["content"] for e in out if e["type"] == "text-delta") == "a b "
    assert out[-1] == {"type": "finish", "reason": "stop"}
    usage = next(e for e in out if e["type"] == "usage")
    assert usage["cache_read_tokens"] == 5 and usage["cache_write_tokens"] == 3


async def test_max_tokens_maps_to_length(upstream: tuple[FakeAnthropic, str]) -> None:
    out = await events(create_adapter(config(upstream[1])), request("one two three four", params={"max_tokens": 2}))
    assert out[-1]["reason"] == "length"


async def test_529_is_retried_and_429_carries_retry_after(upstream: tuple[FakeAnthropic, str]) -> None:
    url = upstream[1]
    runtime = ProviderRuntime(config(url, max_retries=1, retry_base_s=0.01), LoadGauge())
    out = [e async for batch in runtime.stream(request("again", model="fake-overloaded-flaky-1")) for e in batch]
    assert [e["status"] for e in out if e["type"] == "status"] == ["retrying"] and out[-1]["reason"] == "stop"
    assert out[0]["message"].endswith("retry 1/1 in 0.00s")  # the 529's retry-after: 0, honoured
    with pytest.raises(RateLimited) as rate:
        await events(create_adapter(config(url)), request(model="fake-status-429"))
    assert rate.value.retry_after == 2.0
    with pytest.raises(Overloaded):
        await events(create_adapter(config(url)), request(model="fake-status-529"))


async def test_timeouts_and_connection_reuse(upstream: tuple[FakeAnthropic, str]) -> None:
    fake, url = upstream
    with pytest.raises(ProviderTimeout):
        await events(create_adapter(config(url, timeout=0.5)), request(model="fake-hang"))
    adapter = create_adapter(config(url))
    for text in ("one", "two"):
        await events(adapter, request(text))
    assert fake.requests[-1]["port"] == fake.requests[-2]["port"]


def test_a_failed_structured_output_or_an_abandoned_stream_closes_its_generators(
    upstream: tuple[FakeAnthropic, str],
) -> None:
    """Left to the garbage collector, they logged ``aclose(): asynchronous generator is already running``."""
    problems: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
        runtime = ProviderRuntime(config(upstream[1]), LoadGauge())
        failed = [
            e async for b in runtime.stream(request('{"name": "x"}', params={"response_format": PERSON})) for e in b
        ]
        assert failed[-2]["code"] == "invalid_structured_output"
        abandoned = runtime.stream(request(" ".join(["word"] * 200)))
        async for _ in abandoned:
            break
        await abandoned.aclose()
        await runtime.aclose()

    asyncio.run(scenario())  # its shutdown closes any generator still open, reporting failures to the handler
    assert problems == []


@pytest.fixture
def backend(tmp_path: Path, upstream: tuple[FakeAnthropic, str]) -> LocalBackend:
    claude = config(upstream[1], max_retries=0)
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{tmp_path / 'relay.db'}", providers=[claude]))


async def run_turn(backend: LocalBackend, session_id: str | None, req: ChatRequest) -> tuple[str, list[dict[str, Any]]]:
    turn = await backend.open_run(session_id=session_id, user_id="thinker", request=req)
    return turn.session_id, [event async for batch in turn.batches for event in batch]


async def test_a_thinking_tool_turn_sends_its_signed_block_back_even_after_a_restart(
    backend: LocalBackend, upstream: tuple[FakeAnthropic, str]
) -> None:
    fake = upstream[0]
    params = {"tools": [WEATHER_TOOL], "thinking": THINKING}
    session_id, events = await run_turn(backend, None, request("Weather in Paris?", model="fake-tools", params=params))
    assert [e["signature"] for e in events if e.get("signature")] == [signature(THOUGHT)]
    stored = backend.store.messages(session_id)[-1]
    assert stored["thinking_blocks"] == [{"type": "thinking", "thinking": THOUGHT, "signature": signature(THOUGHT)}]
    await backend.evict(session_id)  # the next turn rebuilds the session from the store
    result = {"role": "tool", "tool_call_id": stored["tool_calls"][0]["id"], "content": "sunny"}
    _, events = await run_turn(
        backend, session_id, ChatRequest(provider="claude", model="fake-tools", messages=[result], params=params)
    )
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "Tool said: sunny"
    assistant = fake.requests[-1]["body"]["messages"][1]["content"]
    assert [b["type"] for b in assistant] == ["thinking", "text", "tool_use"]
    assert assistant[0]["signature"] == signature(THOUGHT)


async def test_the_fake_refuses_a_thinking_tool_turn_without_its_signed_block(
    upstream: tuple[FakeAnthropic, str],
) -> None:
    """As real Anthropic does: what the test above guards against is a 400, not a quiet success."""
    call = {
        "id": "toolu_01A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny"},
    ]
    adapter = create_adapter(config(upstream[1]))
    params = {"tools": [WEATHER_TOOL], "thinking": THINKING}
    with pytest.raises(InvalidRequest, match="Expected `thinking` or `redacted_thinking`, but found `text`"):
        await events(adapter, ChatRequest(provider="claude", messages=history, params=params))
    history[1]["thinking_blocks"] = [{"type": "thinking", "thinking": THOUGHT, "signature": signature("other")}]
    with pytest.raises(InvalidRequest, match="Invalid `signature` in `thinking` block"):
        await events(adapter, ChatRequest(provider="claude", messages=history, params=params))
    history[1]["thinking_blocks"][0]["signature"] = signature(THOUGHT)
    out = await events(adapter, ChatRequest(provider="claude", messages=history, params=params))
    assert out[-1] == {"type": "finish", "reason": "stop"}


@pytest.fixture
def relay_url(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as server:
        yield server.url


async def test_the_anthropic_sdk_round_trips_thinking_through_relays_messages_route(
    relay_url: str, upstream: tuple[FakeAnthropic, str]
) -> None:
    client = anthropic.AsyncAnthropic(base_url=relay_url, api_key="unused", max_retries=0)
    tool = {"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
    ask: dict[str, Any] = {"model": "claude/fake-tools", "max_tokens": 2048, "tools": [tool], "thinking": THINKING}
    question = {"role": "user", "content": "Weather in Paris?"}
    async with client.messages.stream(messages=[question], **ask) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "signature" in kinds  # Relay streamed a signature_delta
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == signature(THOUGHT)  # type: ignore[union-attr]
    assert final.usage.cache_read_input_tokens == 5 and final.usage.cache_creation_input_tokens == 3
    call = final.content[2]
    follow_up = await client.messages.create(
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},  # type: ignore[union-attr]
        ],
        **ask,
    )
    assert follow_up.content[0].text == "Tool said: sunny"  # type: ignore[union-attr]
    assert upstream[0].requests[-1]["body"]["messages"][1]["content"][0]["signature"] == signature(THOUGHT)

    with pytest.raises(anthropic.APIStatusError) as failed:
        await client.messages.create(model="claude/fake-status-529", max_tokens=5, messages=[question])
    body: Any = failed.value.body
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert body["request_id"].startswith("req_")
