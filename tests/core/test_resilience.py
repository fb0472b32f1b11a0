"""The retry layer, the circuit breaker, the fallback chain and structured-output validation, as plain Python."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.errors import InvalidRequest, Overloaded, ProviderError, RateLimited, RelayError, UnsupportedFeature
from relay.events import finish, text_delta
from relay.providers.resilience import CircuitBreaker, RetryPolicy, falls_back, retrying, with_fallback
from relay.providers.structured import check_response_format, validate_output
from relay.request import ChatRequest, Target
from relay.types import Batches


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scripted(outcomes: list[RelayError | None]) -> Any:
    """Each call fails with the next error, or streams two events when the outcome is None."""
    calls: list[int] = []

    async def open_stream() -> AsyncIterator[dict[str, Any]]:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        yield text_delta("ok")
        yield finish("stop")

    open_stream.calls = calls  # type: ignore[attr-defined]
    return open_stream


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in stream]


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=3, base_s=0.5, max_s=8.0, max_retry_after_s=10.0)
    error = ProviderError("boom")
    for attempt in range(3):
        delay = policy.delay(attempt, error)
        assert delay is not None and 0 <= delay <= min(8.0, 0.5 * 2**attempt)
    assert policy.delay(3, error) is None
    assert policy.delay(0, RateLimited("slow down", retry_after=2.5)) == 2.5
    assert policy.delay(0, RateLimited("come back tomorrow", retry_after=86400)) is None
    assert policy.delay(0, InvalidRequest("bad")) is None


async def test_retries_until_success_and_reports_each_retry() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    open_stream = scripted([RateLimited("429", retry_after=0.25), Overloaded("529"), None])
    breaker = CircuitBreaker(threshold=5)
    events = await collect(retrying(open_stream, RetryPolicy(max_retries=2), breaker, "p", sleep))
    assert [e["type"] for e in events] == ["status", "status", "text-delta", "finish"]
    assert events[0]["status"] == "retrying" and "rate_limit_error" in events[0]["message"]
    assert sleeps[0] == 0.25 and len(open_stream.calls) == 3
    assert breaker.snapshot()["state"] == "closed" and breaker.failures == 0


async def test_non_retryable_errors_are_not_retried() -> None:
    open_stream = scripted([InvalidRequest("bad"), None])
    with pytest.raises(InvalidRequest):
        await collect(retrying(open_stream, RetryPolicy(max_retries=3), CircuitBreaker(), "p"))
    assert len(open_stream.calls) == 1


async def test_no_retry_after_the_first_event() -> None:
    async def open_stream() -> AsyncIterator[dict[str, Any]]:
        yield text_delta("partial")
        raise ProviderError("dropped")

    seen = []
    with pytest.raises(ProviderError):
        async for event in retrying(open_stream, RetryPolicy(max_retries=3), CircuitBreaker(), "p"):
            seen.append(event)
    assert seen == [text_delta("partial")]


async def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, reset_s=10, clock=clock)
    no_retry = RetryPolicy(max_retries=0)
    for _ in range(2):
        with pytest.raises(ProviderError):
            await collect(retrying(scripted([ProviderError("500")]), no_retry, breaker, "p"))
    assert breaker.state == "open" and breaker.trips == 1
    blocked = scripted([None])
    with pytest.raises(Overloaded) as exc:
        await collect(retrying(blocked, no_retry, breaker, "p"))
    assert exc.value.code == "circuit_open" and exc.value.retry_after == 10 and blocked.calls == []
    clock.now = 10
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.record(ProviderError("still down"))
    assert breaker.state == "open" and breaker.trips == 1
    clock.now = 20
    events = await collect(retrying(scripted([None]), no_retry, breaker, "p"))
    assert events[-1]["type"] == "finish" and breaker.snapshot()["state"] == "closed"


async def test_a_client_error_does_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(threshold=1)
    with pytest.raises(InvalidRequest):
        await collect(retrying(scripted([InvalidRequest("bad")]), RetryPolicy(), breaker, "p"))
    assert breaker.state == "closed"


def request_with_chain(*fallbacks: str) -> ChatRequest:
    return ChatRequest(provider="a", messages=[], fallbacks=[Target(name, f"{name}-model") for name in fallbacks])


async def test_fallback_chain_hands_over_before_the_first_token() -> None:
    opened: list[str] = []

    async def open_stream(request: ChatRequest) -> Batches:
        opened.append(request.provider)
        if request.provider != "c":
            raise Overloaded(f"{request.provider} down")
        yield [text_delta("from c"), finish("stop")]

    out = [(r.provider, batch) async for r, batch in with_fallback(request_with_chain("b", "c"), open_stream)]
    assert opened == ["a", "b", "c"]
    assert [batch[0]["status"] for _, batch in out[:2]] == ["fallback", "fallback"]
    assert "falling back to b" in out[0][1][0]["message"] and "falling back to c" in out[1][1][0]["message"]
    assert out[-1] == ("c", [text_delta("from c"), finish("stop")])


async def test_fallback_does_not_hide_a_bad_request_or_a_midstream_failure() -> None:
    async def bad(request: ChatRequest) -> Batches:
        raise InvalidRequest("bad field")
        yield []

    with pytest.raises(InvalidRequest):
        [x async for x in with_fallback(request_with_chain("b"), bad)]

    async def midstream(request: ChatRequest) -> Batches:
        yield [text_delta("partial")]
        raise ProviderError("dropped")

    with pytest.raises(ProviderError):
        [x async for x in with_fallback(request_with_chain("b"), midstream)]
    assert not falls_back(InvalidRequest("x")) and falls_back(RateLimited("x"))


async def test_a_fallback_that_lacks_a_feature_is_skipped_and_the_real_failure_surfaces() -> None:
    """anthropic(529) -> echo (no tools) -> c: echo is skipped with a status saying why, c serves."""
    opened: list[str] = []

    async def open_stream(request: ChatRequest) -> Batches:
        opened.append(request.provider)
        if request.provider == "a":
            raise Overloaded("a: upstream overloaded_error: Overloaded")
        if request.provider == "echo":
            raise UnsupportedFeature("Provider 'echo' (echo) does not support tools", param="tools")
        yield [text_delta("from c"), finish("stop")]

    out = [(r.provider, batch) async for r, batch in with_fallback(request_with_chain("echo", "c"), open_stream)]
    assert opened == ["a", "echo", "c"]
    skip = out[1][1][0]
    assert skip["status"] == "fallback"
    assert "echo skipped (Provider 'echo' (echo) does not support tools); falling back to c" in skip["message"]
    assert out[-1] == ("c", [text_delta("from c"), finish("stop")])

    opened.clear()
    with pytest.raises(Overloaded, match="overloaded_error"):  # not the 400 of the skipped fallback
        [x async for x in with_fallback(request_with_chain("echo"), open_stream)]
    assert opened == ["a", "echo"]


async def test_the_chosen_provider_lacking_a_feature_is_the_callers_error() -> None:
    async def open_stream(request: ChatRequest) -> Batches:
        raise UnsupportedFeature(f"Provider '{request.provider}' does not support audio", param="audio")
        yield []

    with pytest.raises(UnsupportedFeature, match="'a'"):
        [x async for x in with_fallback(request_with_chain("b"), open_stream)]


def test_structured_output_validation() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert validate_output('{"age": 3}', schema) == {"age": 3}
    with pytest.raises(ProviderError, match="not valid JSON"):
        validate_output("{nope", schema)
    with pytest.raises(ProviderError, match="at age") as exc:
        validate_output('{"age": "three"}', schema)
    assert exc.value.code == "invalid_structured_output"
    with pytest.raises(InvalidRequest) as missing:
        check_response_format({"type": "json_schema", "json_schema": {"schema": schema}})
    assert missing.value.param == "response_format.json_schema.name"
    with pytest.raises(InvalidRequest) as broken:
        check_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    assert broken.value.param == "response_format.json_schema.schema"
