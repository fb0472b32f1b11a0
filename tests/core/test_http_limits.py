"""Per-user limits: the bookkeeping on a hand-driven clock, then over HTTP under concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.config import LimitSettings, ProviderConfig, RelaySettings
from relay.errors import PayloadTooLarge, RateLimited
from relay.http.app import build_app
from relay.http.limits import LocalUserLimits, UserLimiter, check_size, metered
from relay.session.local_backend import LocalBackend
from relay.types import Batches
from tests.fakes.openai_upstream import ServerThread
from tests.waiting import await_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**limits: Any) -> tuple[UserLimiter, Clock]:
    clock = Clock()
    return UserLimiter(LimitSettings.model_validate(limits), clock), clock


def test_requests_per_minute_is_a_bucket_that_refills_and_says_when() -> None:
    limits, clock = limiter(requests_per_min=3)
    leases = [limits.acquire("ann").raise_if_refused() for _ in range(3)]
    for lease in leases:
        limits.release(lease)
    refused = limits.acquire("ann")
    assert refused.lease is None and refused.code == "requests_per_min"
    assert refused.retry_after == pytest.approx(20.0) and "3 requests per minute" in (refused.message or "")
    with pytest.raises(RateLimited) as raised:
        refused.raise_if_refused()
    assert raised.value.status_code == 429 and raised.value.retry_after == pytest.approx(20.0)
    assert limits.acquire("bob").lease is not None  # per user
    clock.now += 19.0
    assert limits.acquire("ann").lease is None
    clock.now += 1.0
    assert limits.acquire("ann").lease is not None


def test_concurrent_streams_are_leases_released_at_the_end_or_when_they_expire() -> None:
    limits, clock = limiter(concurrent_streams=2, request_timeout_s=30)
    first, second = limits.acquire("ann").raise_if_refused(), limits.acquire("ann").raise_if_refused()
    third = limits.acquire("ann")
    assert third.lease is None and third.code == "concurrent_streams" and third.retry_after == 1.0
    limits.release(first)
    assert limits.acquire("ann").lease is not None
    assert limits.acquire("ann").lease is None
    clock.now += 30 + 60  # the replica holding them died: the leases expire after the timeout and a margin
    assert limits.acquire("ann").lease is not None
    assert second not in limits.leases


def test_tokens_are_charged_at_the_end_and_a_user_in_debt_waits() -> None:
    limits, clock = limiter(tokens_per_min=600)
    lease = limits.acquire("ann").raise_if_refused()
    limits.release(lease, tokens=1200)  # a long reply: the bucket goes 600 into debt
    refused = limits.acquire("ann")
    assert refused.code == "tokens_per_min" and refused.retry_after == pytest.approx(60.1)
    clock.now += 61
    assert limits.acquire("ann").lease is not None


def test_per_user_overrides_keep_the_defaults_they_do_not_name() -> None:
    settings = LimitSettings.model_validate(
        {"requests_per_min": 100, "concurrent_streams": 1, "users": {"batch": {"concurrent_streams": 8}}}
    )
    batch = settings.for_user("batch")
    assert batch.concurrent_streams == 8 and batch.requests_per_min == 100
    assert settings.for_user("ann").concurrent_streams == 1


def test_the_limiter_is_asked_only_when_some_user_limit_is_set() -> None:
    assert not LimitSettings().enforced and not LimitSettings(max_messages=5).enforced
    assert LimitSettings(tokens_per_min=10).enforced
    assert LimitSettings.model_validate({"users": {"batch": {"concurrent_streams": 2}}}).enforced


def test_a_user_under_no_limit_skips_the_limiter_though_others_have_one() -> None:
    only_batch = LimitSettings.model_validate({"users": {"batch": {"concurrent_streams": 2}, "ann": {}}})
    assert only_batch.applies_to("batch")
    assert not only_batch.applies_to("ann") and not only_batch.applies_to("bob")
    everyone = LimitSettings(requests_per_min=60)
    assert everyone.applies_to("bob") and everyone.applies_to("batch")


def test_size_caps_are_413s_naming_the_field() -> None:
    settings = LimitSettings(max_messages=2, max_session_messages=10)
    three = [{"role": "user", "content": "x"}] * 3
    with pytest.raises(PayloadTooLarge) as too_many:
        check_size(settings, three, None)
    assert too_many.value.param == "messages" and "3 messages" in too_many.value.message
    with pytest.raises(PayloadTooLarge) as full:
        check_size(settings, three[:1], 10)
    assert full.value.param == "session_id" and full.value.code == "session_history_full"
    check_size(settings, three[:1], 9)


async def test_metered_counts_usage_and_ends_a_stalled_stream_with_a_timeout_error() -> None:
    async def stalled() -> Batches:
        yield [{"type": "usage", "input_tokens": 4, "output_tokens": 6}]
        await asyncio.Event().wait()  # an upstream that never sends another byte
        yield []

    used = [0]
    batches = [batch async for batch in metered(stalled(), 0.2, used)]
    assert used == [10]
    error = batches[-1][0]
    assert error["type"] == "error" and error["error_type"] == "timeout_error" and "0.2 s" in error["message"]


# over HTTP, in-process


def slow_body(text: str = "one two three four", **extra: Any) -> dict[str, Any]:
    return {
        "provider_id": "echo",
        "messages": [{"role": "user", "content": text}],
        "provider_options": {"tokens_per_s": 4},
        **extra,
    }


@contextlib.contextmanager
def serve(tmp_path: Path, limits: dict[str, Any]) -> Iterator[str]:
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    settings = RelaySettings(store_url=f"sqlite:///{tmp_path}/r.db", providers=[echo], limits=limits)
    backend = LocalBackend(settings)
    frozen = LocalUserLimits(settings.limits, clock=lambda: 5000.0)  # no refill while the test runs: exact counts
    with ServerThread(build_app(backend, frozen)) as server:
        yield server.url


async def until_served(http: httpx.AsyncClient, body: dict[str, Any], deadline_s: float = 10.0) -> httpx.Response:
    """Retry a 429 until it is served: a lease is released when the server notices the stream ended."""
    response = await await_until(
        lambda: http.post("/api/streaming/chat", json=body),
        timeout_s=deadline_s,
        interval_s=0.02,
        what="the lease to be released",
        done=lambda response: response.status_code != 429,
    )
    assert response.status_code == 200
    return response


async def test_concurrent_streams_cap_refuses_the_extra_ones_with_retry_after(tmp_path: Path) -> None:
    with serve(tmp_path, {"concurrent_streams": 2}) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            async with contextlib.AsyncExitStack() as open_streams:
                for _ in range(2):
                    response = await open_streams.enter_async_context(
                        http.stream("POST", "/api/streaming/chat", json=slow_body())
                    )
                    assert response.status_code == 200
                extra = await asyncio.gather(*(http.post("/api/streaming/chat", json=slow_body()) for _ in range(4)))
                assert [r.status_code for r in extra] == [429] * 4
                body = extra[0].json()["error"]
                assert body["type"] == "rate_limit_error" and body["code"] == "concurrent_streams"
                assert "2 streams open" in body["message"] and extra[0].headers["retry-after"] == "1"
                other = await http.post("/api/streaming/chat", json=slow_body("x"), headers={"X-User-Id": "bob"})
                assert other.status_code == 200  # another user's slots are their own
            # both streams closed: their leases come back as soon as the server sees the disconnects
            again = await until_served(http, slow_body("done", stream_format="json"))
            assert again.json()["content"] == "done"


async def test_requests_per_minute_under_concurrency_lets_exactly_the_allowance_through(tmp_path: Path) -> None:
    with serve(tmp_path, {"requests_per_min": 5}) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            body = {"provider_id": "echo", "messages": [{"role": "user", "content": "hi"}], "stream_format": "json"}
            responses = await asyncio.gather(*(http.post("/api/streaming/chat", json=body) for _ in range(20)))
            codes = sorted(r.status_code for r in responses)
            assert codes == [200] * 5 + [429] * 15
            refused = next(r for r in responses if r.status_code == 429)
            assert refused.headers["retry-after"] == "12"  # one request in 60/5 s
            assert "5 requests per minute" in refused.json()["error"]["message"]
            # the OpenAI route shares the same allowance, in OpenAI's error shape
            openai_style = await http.post(
                "/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert openai_style.status_code == 429 and openai_style.json()["error"]["type"] == "rate_limit_error"


async def test_tokens_per_minute_refuses_after_a_long_reply(tmp_path: Path) -> None:
    with serve(tmp_path, {"tokens_per_min": 10}) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            words = " ".join(["word"] * 12)
            body = {"provider_id": "echo", "messages": [{"role": "user", "content": words}], "stream_format": "json"}
            first = await http.post("/api/streaming/chat", json=body)
            assert first.status_code == 200 and first.json()["usage"]["output_tokens"] == 12
            second = await http.post("/api/streaming/chat", json=body)
            assert second.status_code == 429 and second.json()["error"]["code"] == "tokens_per_min"
            assert int(second.headers["retry-after"]) >= 1


async def test_message_and_history_caps_answer_413(tmp_path: Path) -> None:
    with serve(tmp_path, {"max_messages": 3, "max_session_messages": 4}) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            many = [{"role": "user", "content": "x"}] * 4
            too_many = await http.post("/v1/chat/completions", json={"model": "echo", "messages": many})
            assert too_many.status_code == 413 and too_many.json()["error"]["param"] == "messages"
            body = {"provider_id": "echo", "messages": [{"role": "user", "content": "hi"}], "stream_format": "json"}
            first = await http.post("/api/streaming/chat", json=body | {"session_id": "s-cap"})
            second = await http.post("/api/streaming/chat", json=body | {"session_id": "s-cap"})
            assert first.status_code == second.status_code == 200  # four stored messages now
            full = await http.post("/api/streaming/chat", json=body | {"session_id": "s-cap"})
            assert full.status_code == 413 and full.json()["error"]["code"] == "session_history_full"


async def test_a_turn_past_its_timeout_is_a_504_before_the_first_token(tmp_path: Path) -> None:
    with serve(tmp_path, {"request_timeout_s": 0.5}) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-User-Id": "ann"}, timeout=30) as http:
            body = {
                "provider_id": "echo",
                "messages": [{"role": "user", "content": "late"}],
                "provider_options": {"ttft_ms": 60_000},
            }
            late = await http.post("/api/streaming/chat", json=body)
            assert late.status_code == 504 and late.json()["error"]["type"] == "timeout_error"
            assert "0.5 s limit" in late.json()["error"]["message"]
            run = (await http.get(f"/api/sessions/{late.headers['x-session-id']}/runs")).json()["runs"][0]
            assert run["status"] in ("cancelled", "failed", "interrupted")  # never left running
