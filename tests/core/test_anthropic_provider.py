"""Anthropic specifics the matrix does not cover: headers, 529 retries, timeouts, Retry-After, usage."""

from __future__ import annotations

from typing import Any

import pytest

from relay.coalesce import LoadGauge
from relay.config import ProviderConfig
from relay.errors import Overloaded, ProviderTimeout, RateLimited
from relay.providers import create_adapter
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest
from tests.fakes.anthropic_upstream import FakeAnthropic


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
