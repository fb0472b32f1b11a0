"""Provider routes, fallbacks and feature checks over HTTP, in-process (``LocalBackend`` under uvicorn)."""

from __future__ import annotations

import sqlite3
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
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread


def settings(db: Path, upstream: str) -> RelaySettings:
    return RelaySettings(
        store_url=f"sqlite:///{db}",
        providers=[
            ProviderConfig(provider_id="echo", provider_type="echo", model="echo", max_retries=0),
            ProviderConfig(
                provider_id="down",
                provider_type="openai_compatible",
                model="fake-status-500",
                base_url=upstream,
                max_retries=0,
                fallbacks=["echo"],
            ),
        ],
    )


@pytest.fixture
def relay(tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]) -> Iterator[tuple[str, LocalBackend]]:
    fake_openai[0].reset()
    backend = LocalBackend(settings(tmp_path / "relay.db", fake_openai[1]))
    with ServerThread(build_app(backend)) as server:
        yield server.url, backend


def typed_events(body: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_the_configured_fallback_serves_and_says_so(relay: tuple[str, LocalBackend]) -> None:
    url, backend = relay
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/api/streaming/chat", json={"provider_id": "down", "messages": [{"role": "user", "content": "hi there"}]}
        )
    events = typed_events(response.text)
    assert response.status_code == 200
    assert [e["status"] for e in events if e["type"] == "status"] == ["started", "fallback"]
    fallback = events[1]
    assert "down failed (provider_error" in fallback["message"] and "falling back to echo" in fallback["message"]
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "hi there"
    assert events[-1]["metrics"]["provider"] == "echo"
    [run] = backend.store.runs(response.headers["x-session-id"])
    assert run["status"] == "completed" and run["provider"] == "echo" and run["model"] == "echo"


async def test_a_request_fallback_chain_and_the_last_error_when_all_fail(
    relay: tuple[str, LocalBackend], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    url, backend = relay
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as exc:
        await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"provider_options": {"fault": "rate_limit"}, "fallbacks": ["down"]},
        )
    assert exc.value.status_code == 502 and "down: upstream 500" in exc.value.message
    session_id = exc.value.response.headers["x-session-id"]
    [run] = backend.store.runs(session_id)
    assert run["status"] == "failed" and run["provider"] == "down"
    assert fake_openai[0].requests[-1]["body"]["model"] == "fake-status-500"


async def test_an_unsupported_feature_is_refused_before_any_upstream_call(
    relay: tuple[str, LocalBackend], fake_openai: tuple[FakeOpenAI, str]
) -> None:
    url, backend = relay
    before = backend.store.count_sessions()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(
            model="down",
            messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "thinking", "x": 1}]}],
        )
    assert exc.value.body["param"] == "messages[0].content[1].type"  # type: ignore[index]
    assert fake_openai[0].requests == [] and backend.store.count_sessions() == before


async def test_register_list_health_delete_and_restore(
    relay: tuple[str, LocalBackend], fake_openai: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    url, _ = relay
    fake, upstream = fake_openai
    registration = {
        "provider_id": "local-llm",
        "provider_type": "openai_compatible",
        "model_name": "fake",
        "base_url": upstream,
        "api_key": "sk-registered-secret",
        "default_headers": {"X-Tenant": "t1"},
        "max_retries": 0,
    }
    async with httpx.AsyncClient(base_url=url) as http:
        created = await http.post("/api/streaming/providers/register", json=registration)
        assert created.status_code == 201, created.text
        assert "sk-registered-secret" not in created.text and created.json()["registered"]
        again = await http.post("/api/streaming/providers/register", json=registration)
        assert again.status_code == 409 and again.json()["error"]["param"] == "provider_id"
        listed = await http.get("/api/streaming/providers")
        assert [p["provider_id"] for p in listed.json()["data"]] == ["echo", "down", "local-llm"]
        assert "sk-registered-secret" not in listed.text
        health = (await http.get("/api/streaming/providers/health")).json()
        by_id = {p["provider_id"]: p for p in health["providers"]}
        assert by_id["local-llm"]["reachable"] and by_id["local-llm"]["breaker"]["state"] == "closed"
        assert by_id["local-llm"]["latency_ms"] >= 0 and by_id["local-llm"]["replicas"] == 1
        assert health["status"] in ("ok", "degraded")
        configured = await http.delete("/api/streaming/providers/echo")
        assert configured.status_code == 409
    row = sqlite3.connect(tmp_path / "relay.db").execute("SELECT secret FROM providers").fetchone()
    assert row[0] and "sk-registered-secret" not in row[0]

    # A restart: a new backend over the same store brings the provider back, key and all.
    restarted = LocalBackend(settings(tmp_path / "relay.db", upstream))
    with ServerThread(build_app(restarted)) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        reply = await client.chat.completions.create(model="local-llm", messages=[{"role": "user", "content": "back"}])
        assert reply.choices[0].message.content == "back "
        headers = fake.requests[-1]["headers"]
        assert headers["authorization"] == "Bearer sk-registered-secret" and headers["x-tenant"] == "t1"
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.delete("/api/streaming/providers/local-llm")).status_code == 200
            gone = await http.delete("/api/streaming/providers/local-llm")
            assert gone.status_code == 404
    assert LocalBackend(settings(tmp_path / "relay.db", upstream)).registry.load() == []


async def test_admin_routes_need_the_admin_key_when_one_is_set(
    relay: tuple[str, LocalBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = relay
    monkeypatch.setenv("RELAY_ADMIN_KEY", "admin-123")
    body = {"provider_id": "e2", "provider_type": "echo"}
    async with httpx.AsyncClient(base_url=url) as http:
        missing = await http.post("/api/streaming/providers/register", json=body)
        assert missing.status_code == 401 and "admin key" in missing.json()["error"]["message"]
        wrong = await http.post("/api/streaming/providers/register", json=body, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
        ok = await http.post(
            "/api/streaming/providers/register", json=body, headers={"Authorization": "Bearer admin-123"}
        )
        assert ok.status_code == 201
        assert (await http.delete("/api/streaming/providers/e2")).status_code == 401
