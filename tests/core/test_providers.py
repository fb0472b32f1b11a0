from __future__ import annotations

from typing import Any

import pytest

from relay.config import ProviderConfig
from relay.errors import InvalidRequest, ProviderError, RateLimited, UnsupportedFeature
from relay.events import EVENT_ADAPTER
from relay.providers import create_adapter
from relay.providers.echo import echo_tokens
from relay.reply import Reply
from relay.request import ChatRequest
from tests.fakes.openai_upstream import FakeOpenAI


def request(text: str = "hello big world", **kw: Any) -> ChatRequest:
    return ChatRequest(provider="p", messages=[{"role": "user", "content": text}], **kw)


async def run(adapter: Any, req: ChatRequest) -> list[dict[str, Any]]:
    events = [event async for event in adapter.stream_chat(req)]
    for event in events:
        EVENT_ADAPTER.validate_python(event)
    assert [e["type"] for e in events].count("finish") == 1 and events[-1]["type"] == "finish"
    return events


def echo(**options: Any) -> Any:
    return create_adapter(ProviderConfig(provider_id="echo", provider_type="echo", options=options))


async def test_echo_streams_the_input_back_word_by_word() -> None:
    events = await run(echo(), request("hello big world"))
    assert [e["content"] for e in events if e["type"] == "text-delta"] == ["hello ", "big ", "world"]
    assert events[-2]["type"] == "usage" and events[-2]["output_tokens"] == 3


async def test_echo_honours_max_tokens_and_repeat() -> None:
    events = await run(echo(repeat=3), request("a b", params={"max_tokens": 4}))
    reply = Reply()
    reply.extend(events)
    assert reply.content == "a b a b " and reply.finish_reason == "length"
    assert echo_tokens("x", 2) == ["x ", "x"]


async def test_echo_fault_injection() -> None:
    with pytest.raises(RateLimited) as rate:
        await run(echo(), request(provider_options={"fault": "rate_limit"}))
    assert rate.value.retry_after == 1.0
    seen = []
    with pytest.raises(ProviderError, match="injected"):
        async for event in echo(fault="error", fault_after=2).stream_chat(request("a b c d")):
            seen.append(event["content"])
    assert seen == ["a ", "b "]
    with pytest.raises(InvalidRequest) as bad:
        await run(echo(), request(provider_options={"fault": "meteor"}))
    assert bad.value.param == "provider_options.fault"


def test_unsupported_feature_names_the_provider_and_feature() -> None:
    adapter = echo()
    with pytest.raises(UnsupportedFeature) as exc:
        adapter.check_features(request(params={"tools": [{"type": "function", "function": {"name": "f"}}]}))
    assert "'echo'" in exc.value.message and exc.value.param == "tools"


@pytest.fixture
def openai_adapter(fake_openai: tuple[FakeOpenAI, str]) -> Any:
    _, base_url = fake_openai
    return create_adapter(
        ProviderConfig(
            provider_id="up",
            provider_type="openai_compatible",
            model="fake",
            base_url=base_url,
            api_key_env="FAKE_KEY_UNSET",
            max_retries=0,
        )
    )


async def test_openai_adapter_streams_text_and_usage(openai_adapter: Any, fake_openai: Any) -> None:
    events = await run(openai_adapter, request("one two", params={"max_tokens": 5}, user="u1"))
    reply = Reply()
    reply.extend(events)
    assert reply.content == "one two " and reply.finish_reason == "stop"
    assert reply.usage == {"input_tokens": 7, "output_tokens": 4, "cache_read_tokens": 2, "reasoning_tokens": 1}
    sent = fake_openai[0].requests[-1]
    assert sent["body"]["stream_options"] == {"include_usage": True}
    assert sent["body"]["max_tokens"] == 5 and sent["body"]["user"] == "u1"


async def test_openai_adapter_reassembles_tool_call_fragments(openai_adapter: Any) -> None:
    events = await run(openai_adapter, request(model="fake-tools"))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "tool-call-start" and kinds.count("tool-call-delta") == 3
    end = next(e for e in events if e["type"] == "tool-call-end")
    assert end["arguments"] == '{"city": "Paris"}' and end["name"] == "get_weather"
    assert events[-1]["reason"] == "tool_calls"


async def test_openai_adapter_maps_reasoning_from_deepseek_and_vllm(openai_adapter: Any) -> None:
    events = await run(openai_adapter, request("x", model="fake-reasoning"))
    assert [e["content"] for e in events if e["type"] == "reasoning-delta"] == ["think ", "more"]


async def test_openai_adapter_maps_upstream_errors(openai_adapter: Any) -> None:
    with pytest.raises(RateLimited) as rate:
        await run(openai_adapter, request(model="fake-429"))
    assert rate.value.retry_after == 2.0 and "Rate limit reached" in rate.value.message
    with pytest.raises(ProviderError, match="upstream 500"):
        await run(openai_adapter, request(model="fake-500"))
    with pytest.raises(ProviderError, match="upstream broke"):
        await run(openai_adapter, request(model="fake-midstream-error"))


async def test_openai_adapter_never_puts_the_key_in_errors(fake_openai: Any) -> None:
    adapter = create_adapter(
        ProviderConfig(
            provider_id="up",
            provider_type="openai",
            model="fake-500",
            base_url=fake_openai[1],
            api_key="sk-secret-123",
            max_retries=0,
        )
    )
    with pytest.raises(ProviderError) as exc:
        await run(adapter, request())
    assert "sk-secret-123" not in str(exc.value) and "sk-secret-123" not in repr(adapter.config)
    assert fake_openai[0].requests[-1]["headers"]["authorization"] == "Bearer sk-secret-123"
