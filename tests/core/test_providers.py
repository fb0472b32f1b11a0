from __future__ import annotations

from typing import Any

import pytest

from relay.config import ProviderConfig
from relay.errors import InvalidRequest, ProviderError, RateLimited, UnsupportedFeature
from relay.providers.echo import echo_tokens
from relay.providers.features import check_features
from relay.reply import Reply
from relay.request import ChatRequest
from tests.cases import adapter_events, create_adapter, user_request


def request(text: str = "hello big world", **kw: Any) -> ChatRequest:
    return user_request(text, "p", **kw)


run = adapter_events


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
        check_features(
            adapter.config, request(params={"tools": [{"type": "function", "function": {"name": "f"}}]})
        )
    assert "'echo'" in exc.value.message and exc.value.param == "tools"
