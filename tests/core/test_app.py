"""The HTTP surface in-process: the Starlette app over ``LocalBackend``, served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.cases import BAD_INPUT, check_error
from tests.fakes.openai_upstream import ServerThread


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("app")) / "relay.db"
    providers = [ProviderConfig(provider_id="echo", provider_type="echo", model="echo", models=["echo-1"])]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


@pytest.fixture(scope="module")
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


@pytest.fixture
def client(server: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)


def sse_events(body: str) -> list[dict[str, Any]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        event = orjson.loads(lines["data"])
        assert lines["event"] == event["type"]
        events.append(event)
    return events


async def test_sdk_streams_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "hello streaming world"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello streaming world"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_sdk_non_streaming_and_model_alias(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "plain reply"}]
    )
    assert completion.choices[0].message.content == "plain reply"
    assert completion.choices[0].finish_reason == "stop"
    models = await client.models.list()
    assert {"echo", "echo-1"} <= {m.id for m in models.data}


async def test_session_header_continues_history(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        first = await http.post(
            "/api/streaming/chat", json={"messages": [{"role": "user", "content": "one"}], "stream_format": "json"}
        )
        sid = first.headers["x-session-id"]
        second = await http.post(
            "/api/streaming/chat",
            headers={"X-Session-Id": sid},
            json={"messages": [{"role": "user", "content": "two"}]},
        )
        events = sse_events(second.text)
        assert second.headers["x-session-id"] == sid
        assert [e["type"] for e in events] == ["status", "text-delta", "usage", "finish"] and events[0][
            "status"
        ] == "started"
        assert events[-1]["session_id"] == sid
        history = (await http.get(f"/api/sessions/{sid}/messages")).json()["messages"]
        assert [(m["role"], m["content"]) for m in history] == [
            ("user", "one"),
            ("assistant", "one"),
            ("user", "two"),
            ("assistant", "two"),
        ]
        # the provider saw the stored history: echo's usage counts every prompt token
        assert next(e for e in events if e["type"] == "usage")["input_tokens"] == 3


async def test_ndjson_format_and_a_cut_off_run_is_kept(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.post(
            "/api/streaming/chat",
            json={
                "messages": [{"role": "user", "content": "a b c d"}],
                "stream_format": "ndjson",
                "provider_options": {"fault": "error", "fault_after": 2},
            },
        )
        events = [orjson.loads(line) for line in response.text.splitlines()]
        assert [e["type"] for e in events] == ["status", "text-delta", "text-delta", "error", "finish"]
        assert events[-1]["reason"] == "error"
        sid = response.headers["x-session-id"]
        runs = (await http.get(f"/api/sessions/{sid}/runs")).json()["runs"]
        assert runs[0]["status"] == "interrupted" and runs[0]["output"] == "a b "
        assert runs[0]["error"]["error_type"] == "provider_error"


async def test_an_error_before_any_token_gets_its_http_status(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "echo",
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
                "provider_options": {"fault": "rate_limit"},
            },
        )
        check_error(response, 429, None, "rate limit")
        assert response.headers["retry-after"] == "1"
        runs = (await http.get(f"/api/sessions/{response.headers['x-session-id']}/runs")).json()["runs"]
        assert runs[0]["status"] == "failed"  # the error response names the session that keeps the run


async def test_other_users_session_is_not_found(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        first = await http.post(
            "/api/streaming/chat",
            headers={"X-User-Id": "alice"},
            json={"messages": [{"role": "user", "content": "secret"}], "stream_format": "json"},
        )
        sid = first.headers["x-session-id"]
        as_bob = await http.get(f"/api/sessions/{sid}/messages", headers={"X-User-Id": "bob"})
        check_error(as_bob, 404, "session_id", "not found")
        hijack = await http.post(
            "/api/streaming/chat",
            headers={"X-User-Id": "bob", "X-Session-Id": sid},
            json={"messages": [{"role": "user", "content": "x"}]},
        )
        check_error(hijack, 404, "session_id", "not found")


@pytest.mark.parametrize(("name", "path", "body", "status", "param", "text"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_input(
    server: str, name: str, path: str, body: bytes, status: int, param: str | None, text: str
) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.post(path, content=body, headers={"content-type": "application/json"})
        check_error(response, status, param, text)
        assert (await http.get("/healthz")).status_code == 200


async def test_unknown_route_is_a_json_404(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        check_error(await http.get("/v1/nothing"), 404, None, "/v1/nothing")


async def test_generator_modes_and_the_text_format_over_http(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        chunked = await http.post(
            "/api/streaming/chat",
            json={
                "generator_mode": "chunked",
                "chunk_size": 3,
                "messages": [{"role": "user", "content": "abcdefgh ij"}],
            },
        )
        pieces = [e["content"] for e in sse_events(chunked.text) if e["type"] == "text-delta"]
        assert "".join(pieces) == "abcdefgh ij" and all(len(p) <= 3 for p in pieces) and len(pieces) >= 4
        plain = await http.post(
            "/api/streaming/chat",
            json={"stream_format": "text", "messages": [{"role": "user", "content": "just words"}]},
        )
        assert plain.text == "just words" and plain.headers["content-type"].startswith("text/plain")


async def test_interleaved_compares_providers_side_by_side(server: str, backend: LocalBackend) -> None:
    await backend.register_provider(ProviderConfig(provider_id="echo-b", provider_type="echo", options={"repeat": 2}))
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.post(
            "/api/streaming/chat",
            json={
                "generator_mode": "interleaved",
                "provider_ids": ["echo", "echo-b"],
                "stream_format": "ndjson",
                "messages": [{"role": "user", "content": "same prompt"}],
            },
        )
    events = [orjson.loads(line) for line in response.text.splitlines()]
    text: dict[str, str] = {}
    for event in events:
        if event["type"] == "text-delta":
            text[event["provider"]] = text.get(event["provider"], "") + event["content"]
    assert text == {"echo": "same prompt", "echo-b": "same prompt same prompt"}
    assert sorted(e["provider"] for e in events if e["type"] == "finish") == ["echo", "echo-b"]
    assert len(response.headers["x-session-id"].split(",")) == 2


async def test_stats_count_requests_errors_and_latency_per_provider(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        before = {p["provider_id"]: p for p in (await http.get("/api/stats")).json()["providers"]}["echo"]
        await http.post("/api/streaming/chat", json={"messages": [{"role": "user", "content": "count me"}]})
        await http.post(
            "/api/streaming/chat",
            json={
                "messages": [{"role": "user", "content": "x y"}],
                "provider_options": {"fault": "error", "fault_after": 1},
            },
        )
        after = {p["provider_id"]: p for p in (await http.get("/api/stats")).json()["providers"]}["echo"]
    assert after["requests"] - before["requests"] == 2 and after["errors"] - before["errors"] == 1
    assert after["completed"] - before["completed"] == 1 and after["mean_ttft_ms"] is not None
