"""The OpenAI-wire adapters (openai, azure, openai_compatible) against the fake OpenAI server, through the SDK."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from relay.coalesce import LoadGauge
from relay.config import ProviderConfig
from relay.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RelayError,
    Unprocessable,
)
from relay.providers import create_adapter
from relay.providers.runtime import ProviderRuntime
from relay.reply import Reply
from relay.request import ChatRequest
from tests.cases import adapter_events, user_request
from tests.fakes.openai_upstream import FakeOpenAI


def request(text: str = "hello big world", **kw: Any) -> ChatRequest:
    return user_request(text, "up", **kw)


run = adapter_events


def config(base_url: str, **kw: Any) -> ProviderConfig:
    fields = {"provider_id": "up", "provider_type": "openai_compatible", "model": "fake", "base_url": base_url}
    return ProviderConfig(**(fields | kw))


@pytest.fixture
def upstream(fake_openai: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    fake_openai[0].reset()
    return fake_openai


async def test_streams_text_and_usage_with_the_right_token_param(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    events = await run(create_adapter(config(url)), request("one two", params={"max_tokens": 5}, user="u1"))
    reply = Reply()
    reply.extend(events)
    assert reply.content == "one two " and reply.finish_reason == "stop"
    assert reply.usage == {"input_tokens": 7, "output_tokens": 4, "cache_read_tokens": 2, "reasoning_tokens": 1}
    sent = fake.requests[-1]["body"]
    assert sent["stream_options"] == {"include_usage": True} and sent["max_tokens"] == 5 and sent["user"] == "u1"
    await run(create_adapter(config(url, provider_type="openai")), request("x", params={"max_tokens": 3}))
    assert fake.requests[-1]["body"]["max_completion_tokens"] == 3 and "max_tokens" not in fake.requests[-1]["body"]


async def test_sdk_options_reach_the_wire(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(
        config(url, provider_type="openai", organization="org-1", default_headers={"X-Team": "eval"}, api_key="sk-1")
    )
    await run(adapter, request())
    headers = fake.requests[-1]["headers"]
    assert headers["openai-organization"] == "org-1" and headers["x-team"] == "eval"
    assert headers["authorization"] == "Bearer sk-1" and "x-stainless-retry-count" in headers
    assert adapter.client.max_retries == 0  # Relay retries; the SDK must not


async def test_azure_uses_deployment_and_api_version(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(
        ProviderConfig(
            provider_id="az",
            provider_type="azure",
            model="fake",
            deployment="prod-gpt4o",
            api_version="2024-10-21",
            base_url=url.removesuffix("/v1"),
            api_key="az-key",
        )
    )
    events = await run(adapter, request("via azure"))
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "via azure "
    sent = fake.requests[-1]
    assert sent["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
    assert sent["headers"]["api-key"] == "az-key"
    health = await adapter.health()
    assert health["reachable"] and health["ok"]


async def test_reassembles_parallel_tool_call_fragments(upstream: tuple[FakeOpenAI, str]) -> None:
    events = await run(create_adapter(config(upstream[1])), request(model="fake-parallel-tools"))
    ends = [e for e in events if e["type"] == "tool-call-end"]
    assert [(e["index"], e["tool_call_id"], e["arguments"]) for e in ends] == [
        (0, "call_a", '{"city": "Paris"}'),
        (1, "call_b", '{"city": "Rome"}'),
    ]
    assert events[-1]["reason"] == "tool_calls"


async def test_reasoning_from_deepseek_and_vllm(upstream: tuple[FakeOpenAI, str]) -> None:
    events = await run(create_adapter(config(upstream[1])), request("x", model="fake-reasoning"))
    assert [e["content"] for e in events if e["type"] == "reasoning-delta"] == ["think ", "more"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, InvalidRequest),
        (401, AuthenticationFailed),
        (403, PermissionDenied),
        (404, NotFound),
        (413, PayloadTooLarge),
        (422, Unprocessable),
        (429, RateLimited),
        (500, ProviderError),
        (503, Overloaded),
    ],
)
async def test_upstream_statuses_map_to_relay_errors(
    upstream: tuple[FakeOpenAI, str], status: int, error: type[RelayError]
) -> None:
    with pytest.raises(error) as exc:
        await run(create_adapter(config(upstream[1])), request(model=f"fake-status-{status}"))
    assert type(exc.value) is error and exc.value.message.startswith(f"up: upstream {status}")
    if status == 429:
        assert exc.value.retry_after == 2.0


async def test_vllm_integer_error_code_and_transport_failures(upstream: tuple[FakeOpenAI, str]) -> None:
    adapter = create_adapter(config(upstream[1], timeout=0.5))
    with pytest.raises(InvalidRequest) as vllm:
        await run(adapter, request(model="fake-vllm-error"))
    assert vllm.value.code == "400"
    seen: list[str] = []
    with pytest.raises(ProviderError, match="connection to upstream lost"):
        async for event in adapter.stream_chat(request("this gets cut", model="fake-drop")):
            seen.append(event["type"])
    assert "text-delta" in seen
    with pytest.raises(ProviderTimeout):
        await run(adapter, request(model="fake-hang"))
    with pytest.raises(ProviderError, match="upstream broke"):
        await run(adapter, request(model="fake-midstream-error"))


async def test_the_key_never_appears_in_errors(upstream: tuple[FakeOpenAI, str]) -> None:
    adapter = create_adapter(config(upstream[1], provider_type="openai", model="fake-500", api_key="sk-secret-123"))
    with pytest.raises(ProviderError) as exc:
        await run(adapter, request())
    assert "sk-secret-123" not in str(exc.value) and "sk-secret-123" not in repr(adapter.config)
    assert "sk-secret-123" not in adapter.config.model_dump_json()


async def test_runtime_retries_429_and_503_then_succeeds(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    runtime = ProviderRuntime(config(url, max_retries=2), LoadGauge())
    events = [
        e for batch in [b async for b in runtime.stream(request("retry me", model="fake-flaky-2"))] for e in batch
    ]
    assert [e["status"] for e in events if e["type"] == "status"] == ["retrying", "retrying"]
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "retry me "
    assert len(fake.requests) == 3 and runtime.breaker.state == "closed"
    with pytest.raises(Overloaded):
        [
            b
            async for b in ProviderRuntime(config(url, max_retries=1), LoadGauge()).stream(
                request("still down", model="fake-unavailable-flaky-5")
            )
        ]
    assert len(fake.requests) == 5


async def test_breaker_opens_after_repeated_failures_and_shows_in_health(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    runtime = ProviderRuntime(config(url, max_retries=0, breaker_threshold=2), LoadGauge())
    for _ in range(2):
        with pytest.raises(ProviderError):
            [b async for b in runtime.stream(request(model="fake-500"))]
    with pytest.raises(Overloaded, match="circuit open"):
        [b async for b in runtime.stream(request())]
    assert len(fake.requests) == 2  # the open circuit spared the upstream
    health = await runtime.health()
    assert health["breaker"]["state"] == "open" and health["reachable"] and not health["ok"]


async def test_health_reports_an_unreachable_upstream() -> None:
    adapter = create_adapter(config("http://127.0.0.1:9/v1"))
    health = await adapter.health()
    assert health == health | {"reachable": False, "ok": False}


async def test_one_pooled_client_reuses_its_connections(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(config(url))
    for text in ("one", "two", "three"):
        await run(adapter, request(text))
    assert len({r["port"] for r in fake.requests}) == 1  # keep-alive: one TCP connection for three streams


async def test_a_caller_supplied_http_client_is_used(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    client = httpx2.AsyncClient(headers={"X-Through": "my-client"})
    adapter = create_adapter(config(url))
    custom = type(adapter)(adapter.config, http_client=client)
    await run(custom, request())
    assert fake.requests[-1]["headers"]["x-through"] == "my-client"
    await client.aclose()
