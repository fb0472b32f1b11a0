"""A whole reply (``relay.providers.whole.complete``) from real runtimes against the fake OpenAI and Anthropic
servers: the streamed reply's text, calls, usage and finish, its timing, its metrics, and the streamed errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from relay.config import ProviderConfig
from relay.errors import AuthenticationFailed, InvalidRequest, Overloaded, ProviderError, RateLimited, RelayError
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.providers.telemetry import NO_METRICS, MetricsSink
from relay.providers.whole import complete, fold
from relay.request import ChatRequest
from tests.core.test_telemetry import Recorded
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI

# Fast retries and a breaker that stays closed unless a test sets its own: these tests count upstream requests.
QUICK = {"retry_base_s": 0.01, "retry_max_s": 0.05, "breaker_threshold": 1000}


@pytest.fixture
def openai_fake(fake_openai: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    fake_openai[0].reset()
    return fake_openai


@pytest.fixture
def anthropic_fake(fake_anthropic: tuple[FakeAnthropic, str]) -> tuple[FakeAnthropic, str]:
    fake_anthropic[0].reset()
    return fake_anthropic


def openai(url: str, metrics: MetricsSink = NO_METRICS, **extra: Any) -> ProviderRuntime:
    config = ProviderConfig(
        provider_id="oa", provider_type="openai_compatible", model="fake", base_url=url, **(QUICK | extra)
    )
    return ProviderRuntime(config, LoadGauge(), metrics=metrics)


def anthropic(fake: tuple[FakeAnthropic, str], **extra: Any) -> ProviderRuntime:
    config = ProviderConfig(
        provider_id="claude",
        provider_type="anthropic",
        model="fake-claude",
        base_url=fake[1],
        api_key=SecretStr(fake[0].api_key),
        **(QUICK | extra),
    )
    return ProviderRuntime(config, LoadGauge())


def ask(provider: str, text: str, model: str | None = None, **params: Any) -> ChatRequest:
    return ChatRequest(provider, [{"role": "user", "content": text}], model=model, params=params, memory=False)


async def test_a_whole_reply_is_the_streamed_reply_with_its_usage_finish_and_timing(
    openai_fake: tuple[FakeOpenAI, str],
) -> None:
    sink = Recorded()
    runtime = openai(openai_fake[1], sink)
    whole = await complete(runtime, ask("oa", "the capital is Paris"))
    streamed = await fold(runtime.stream(ask("oa", "the capital is Paris")))
    assert whole.text == streamed.text == "the capital is Paris "  # the fake sends each word with a space
    assert whole.usage == streamed.usage
    assert (whole.usage["input_tokens"], whole.usage["output_tokens"]) == (7, 4)  # the fake's usage chunk
    assert whole.finish_reason == "stop" and whole.error is None and whole.tool_calls == []
    assert whole.ttft_ms is not None and 0 < whole.ttft_ms <= whole.latency_ms
    # The runtime's own counters and the pool's metrics, as a streamed call leaves them.
    assert runtime.stats()["completed"] == 2 and runtime.stats()["errors"] == 0
    assert sink.calls == [("started", "oa"), ("first_token", "oa"), ("tokens", "oa", 7, 4), ("ended", "oa")] * 2
    await runtime.aclose()


async def test_tool_calls_come_back_whole_on_openai_and_anthropic(
    openai_fake: tuple[FakeOpenAI, str], anthropic_fake: tuple[FakeAnthropic, str]
) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    for runtime, provider in ((openai(openai_fake[1]), "oa"), (anthropic(anthropic_fake), "claude")):
        whole = await complete(runtime, ask(provider, "weather in Paris?", "fake-tools", tools=tools))
        assert [call["function"]["name"] for call in whole.tool_calls] == ["weather"], provider
        assert whole.finish_reason == "tool_calls" and whole.ttft_ms is not None
        await runtime.aclose()


async def test_the_timing_is_the_upstreams_pace() -> None:
    """An echo that waits 60 ms and then sends 4 words at 50 a second: TTFT and latency cannot be less."""
    config = ProviderConfig(
        provider_id="slow", provider_type="echo", model="echo", options={"ttft_ms": 60, "tokens_per_s": 50}
    )
    runtime = ProviderRuntime(config, LoadGauge())
    whole = await complete(runtime, ask("slow", "one two three four"))
    assert whole.text == "one two three four" and whole.usage["output_tokens"] == 4
    assert whole.ttft_ms is not None and whole.ttft_ms >= 60 and whole.latency_ms >= 60 + 3 / 50 * 1000


async def _raised(reply: Any) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await reply
    return caught.value


async def _raised_streaming(runtime: ProviderRuntime, request: ChatRequest) -> RelayError:
    with pytest.raises(RelayError) as caught:
        async for _ in runtime.stream(request):
            pass
    return caught.value


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("fake-status-400", InvalidRequest),
        ("fake-status-401", AuthenticationFailed),
        ("fake-status-429", RateLimited),
        ("fake-500", ProviderError),
    ],
)
async def test_an_openai_failure_raises_the_error_the_stream_raises(
    openai_fake: tuple[FakeOpenAI, str], model: str, expected: type[RelayError]
) -> None:
    runtime = openai(openai_fake[1], max_retries=0)  # the fake's 429 asks for a 2 s Retry-After
    whole = await _raised(complete(runtime, ask("oa", "hello", model)))
    streamed = await _raised_streaming(runtime, ask("oa", "hello", model))
    assert type(whole) is type(streamed) is expected
    assert (whole.status_code, whole.error_type, whole.retry_after) == (
        streamed.status_code,
        streamed.error_type,
        streamed.retry_after,
    )
    assert len(openai_fake[0].requests) == 2 and runtime.stats()["errors"] == 2
    await runtime.aclose()


async def test_an_anthropic_overload_is_retried_then_raised_as_overloaded(
    anthropic_fake: tuple[FakeAnthropic, str],
) -> None:
    runtime = anthropic(anthropic_fake, max_retries=2)
    error = await _raised(complete(runtime, ask("claude", "hello", "fake-status-529")))
    assert isinstance(error, Overloaded) and error.status_code == 503
    assert len(anthropic_fake[0].requests) == 3 and runtime.stats()["errors"] == 1
    await runtime.aclose()


async def test_the_breaker_opens_on_whole_replies_as_on_streams(openai_fake: tuple[FakeOpenAI, str]) -> None:
    runtime = openai(openai_fake[1], max_retries=0, breaker_threshold=2, breaker_reset_s=60)
    for _ in range(2):
        assert isinstance(await _raised(complete(runtime, ask("oa", "hello", "fake-500"))), ProviderError)
    refused = await _raised(complete(runtime, ask("oa", "hello")))
    assert isinstance(refused, Overloaded) and refused.code == "circuit_open"
    assert len(openai_fake[0].requests) == 2  # the open breaker called no upstream
    await runtime.aclose()


async def test_an_invalid_structured_output_is_the_replys_error_not_a_raise(
    openai_fake: tuple[FakeOpenAI, str],
) -> None:
    runtime = openai(openai_fake[1])
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}
    whole = await complete(runtime, ask("oa", "not json at all", response_format=schema))
    assert whole.text == "not json at all " and whole.finish_reason == "error"
    assert whole.error is not None and whole.error["code"] == "invalid_structured_output"
    await runtime.aclose()
