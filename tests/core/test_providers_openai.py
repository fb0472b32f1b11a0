"""The OpenAI-wire adapters (openai, azure, openai_compatible) against the fake OpenAI server, through the SDK."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
import uvicorn

from relay.config import ProviderConfig, RelaySettings
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
from relay.http.app import build_app
from relay.providers.base import pooled_client
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.reply import Reply
from relay.request import ChatRequest
from relay.session.local_backend import LocalBackend
from tests.cases import WEATHER_TOOL, adapter_events, create_adapter, user_request
from tests.fakes.flaky_front import FlakyFront
from tests.fakes.openai_upstream import MISSING_KEY, FakeOpenAI, ServerThread

KEY = "sk-proj-relaytest0123456789abcd"


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


def test_idle_connections_expire_before_uvicorns_keep_alive_closes_them() -> None:
    pool = pooled_client(config("http://127.0.0.1:9/v1"))._transport._pool  # type: ignore[attr-defined]
    # a stream sent on a connection the server is closing fails as a lost connection (seen in benchmarks/run.py)
    assert pool._keepalive_expiry < uvicorn.Config(app=None).timeout_keep_alive


async def test_a_caller_supplied_http_client_is_used(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    client = httpx2.AsyncClient(headers={"X-Through": "my-client"})
    adapter = create_adapter(config(url))
    custom = type(adapter)(adapter.config, http_client=client)
    await run(custom, request())
    assert fake.requests[-1]["headers"]["x-through"] == "my-client"
    await client.aclose()


@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[FakeOpenAI, str]]:
    """A fake that, like OpenAI, wants ``Authorization: Bearer <KEY>``."""
    fake = FakeOpenAI(api_key=KEY)
    with ServerThread(fake.app) as server:
        yield fake, server.url + "/v1"


async def test_a_wrong_or_missing_key_gets_openais_401_and_relay_never_repeats_the_key(
    keyed: tuple[FakeOpenAI, str],
) -> None:
    url = keyed[1]
    body = {"model": "fake", "messages": [{"role": "user", "content": "x"}]}
    wrong_key = "sk-proj-wrongkey000000000wxyz"
    async with httpx2.AsyncClient() as http:
        wrong = await http.post(url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {wrong_key}"})
        missing = await http.post(url + "/chat/completions", json=body)
    assert wrong.status_code == 401 and wrong.json() == {
        "error": {
            "message": "Incorrect API key provided: sk-**********************wxyz. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert missing.status_code == 401
    assert missing.json() == {
        "error": {"message": MISSING_KEY, "type": "invalid_request_error", "param": None, "code": None}
    }
    with pytest.raises(AuthenticationFailed) as exc:
        await run(create_adapter(config(url, provider_type="openai", api_key=wrong_key)), request())
    assert exc.value.code == "invalid_api_key" and "wxyz" not in exc.value.message and "sk-" not in exc.value.message


def every_byte_under(root: Path) -> bytes:
    """The store, its WAL, the secret key file: whatever Relay wrote."""
    return b"".join(path.read_bytes() for path in root.rglob("*") if path.is_file())


async def test_api_key_env_names_the_variable_the_key_is_read_from_and_it_is_written_nowhere(
    keyed: tuple[FakeOpenAI, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = keyed
    monkeypatch.setenv("RELAY_TEST_OPENAI_KEY", KEY)
    gpt = ProviderConfig(
        provider_id="gpt", provider_type="openai", model="fake", base_url=url, api_key_env="RELAY_TEST_OPENAI_KEY"
    )
    backend = LocalBackend(RelaySettings(store_url=f"sqlite:///{tmp_path / 'relay.db'}", providers=[gpt]))
    with ServerThread(build_app(backend)) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        reply = await client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "keyed hello"}])
        async with httpx2.AsyncClient(base_url=server.url) as http:
            listed = await http.get("/api/streaming/providers")
    assert (reply.choices[0].message.content or "").strip() == "keyed hello"
    assert fake.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert listed.json()["data"][0]["api_key_env"] == "RELAY_TEST_OPENAI_KEY" and KEY not in listed.text
    written = every_byte_under(tmp_path)
    assert b"keyed hello" in written and KEY.encode() not in written and KEY not in caplog.text
    monkeypatch.delenv("RELAY_TEST_OPENAI_KEY")
    with pytest.raises(AuthenticationFailed):  # the key came from the variable, and from nowhere else
        await run(create_adapter(gpt), request())


async def test_a_connection_failure_before_the_first_token_is_retried(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    port = int(url.removesuffix("/v1").rsplit(":", 1)[1])
    with FlakyFront(port, resets=1) as front:
        runtime = ProviderRuntime(config(front.url + "/v1", max_retries=1, retry_base_s=0), LoadGauge())
        events = [e async for batch in runtime.stream(request("through the front")) for e in batch]
        await runtime.aclose()
    [retry] = [e for e in events if e["type"] == "status"]
    assert retry["status"] == "retrying" and "provider_error" in retry["message"]
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "through the front "
    assert front.accepted == 2 and len(fake.requests) == 1  # the reset connection never reached the server


def data_lines(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]


async def test_the_fake_streams_tool_calls_and_errors_as_openai_does(upstream: tuple[FakeOpenAI, str]) -> None:
    url = upstream[1]
    ask = {"stream": True, "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL]}
    async with httpx2.AsyncClient() as http:
        tools = await http.post(url + "/chat/completions", json=ask | {"model": "fake-tools"})
        broken = await http.post(url + "/chat/completions", json=ask | {"model": "fake-midstream-error"})
    first = data_lines(tools.text)[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None and first["tool_calls"][0]["id"] == "call_abc"
    assert set(data_lines(broken.text)[-1]["error"]) == {"message", "type", "param", "code"}
