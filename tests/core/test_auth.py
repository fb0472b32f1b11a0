"""API keys in-process: created by the CLI, checked on every route, owners scoped to the key's user."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import websockets

from relay.cli import main
from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.auth import hash_key, new_key
from relay.session.local_backend import LocalBackend
from relay.store import open_store
from tests.fakes.openai_upstream import ServerThread

CHAT = {"provider_id": "echo", "messages": [{"role": "user", "content": "hello there"}], "stream_format": "json"}


def create_key(store_url: str, user: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["keys", "create", "--user", user, "--store-url", store_url, *extra]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("rk_") and len(key) == 46
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings(tmp_path: Path, **extra: Any) -> RelaySettings:
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    return RelaySettings.model_validate(
        {"store_url": f"sqlite:///{tmp_path}/relay.db", "providers": [echo], "auth": {"cache_ttl_s": 0}} | extra
    )


@pytest.fixture
def keyed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A server whose store holds keys for alice, bob and an admin."""
    config = settings(tmp_path)
    keys = {
        "alice": create_key(config.store_url, "alice", capsys=capsys),
        "bob": create_key(config.store_url, "bob", capsys=capsys),
        "root": create_key(config.store_url, "root", "--admin", capsys=capsys),
    }
    with ServerThread(build_app(LocalBackend(config))) as server:
        yield server.url, keys


def test_the_store_keeps_only_the_sha256_of_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/relay.db"
    key = create_key(url, "alice", "--name", "laptop", capsys=capsys)
    store = open_store(url)
    rows = store._rows("SELECT * FROM api_keys")
    assert len(rows) == 1 and rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in orjson.dumps(rows).decode() and rows[0]["prefix"] == key[:10]
    assert store.api_key_by_hash(hash_key(key)) == {
        "key_id": rows[0]["key_id"],
        "user_id": "alice",
        "is_admin": False,
        "budget_usd": None,
        "budget_period": "month",
    }
    assert main(["keys", "list", "--store-url", url]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and key[:10] in listing and key not in listing
    assert main(["keys", "revoke", rows[0]["key_id"], "--store-url", url]) == 0
    assert store.api_key_by_hash(hash_key(key)) is None and store.has_api_keys()
    assert main(["keys", "revoke", "--user", "alice", "--store-url", url]) == 1  # nothing left to revoke
    a, b = new_key(), new_key()
    assert a[0] != b[0] and a[1] != b[1]


async def test_missing_wrong_and_revoked_keys_are_401(
    keyed: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys = keyed
    async with httpx.AsyncClient(base_url=url) as http:
        missing = await http.post("/api/streaming/chat", json=CHAT)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        error = missing.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
        assert "relay keys create" in error["message"]
        wrong = await http.post("/api/streaming/chat", json=CHAT, headers=bearer("rk_" + "x" * 43))
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert (await http.get("/api/sessions", headers={"X-User-Id": "alice"})).status_code == 401
        ok = await http.post("/api/streaming/chat", json=CHAT, headers=bearer(keys["alice"]))
        assert ok.status_code == 200 and ok.json()["content"] == "hello there"
        assert main(["keys", "revoke", "--user", "alice", "--store-url", f"sqlite:///{tmp_path}/relay.db"]) == 0
        revoked = await http.post("/api/streaming/chat", json=CHAT, headers=bearer(keys["alice"]))
        assert revoked.status_code == 401
        for public in ("/healthz", "/openapi.json", "/"):
            assert (await http.get(public)).status_code == 200, public


async def test_a_fresh_server_refuses_its_first_burst_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Auth turns on once a key exists, which a fresh process learns from the store; requests that come while it
    asks must wait for the answer, not pass as if auth were off (the default cache_ttl_s, not the fixture's 0)."""
    config = settings(tmp_path, auth={"cache_ttl_s": 5})
    create_key(config.store_url, "alice", capsys=capsys)
    with ServerThread(build_app(LocalBackend(config))) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            burst = await asyncio.gather(*(http.post("/api/streaming/chat", json=CHAT) for _ in range(16)))
    assert [response.status_code for response in burst] == [401] * 16


async def test_the_key_names_the_user_and_another_users_session_is_404(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    async with httpx.AsyncClient(base_url=url) as http:
        # X-User-Id is ignored once auth is on: the session belongs to the key's user
        created = await http.post("/api/sessions", json={}, headers=bearer(keys["alice"]) | {"X-User-Id": "bob"})
        sid = created.json()["session_id"]
        assert created.status_code == 201 and created.json()["user_id"] == "alice"
        chat = await http.post("/api/streaming/chat", json=CHAT | {"session_id": sid}, headers=bearer(keys["alice"]))
        assert chat.status_code == 200
        as_bob = bearer(keys["bob"]) | {"X-User-Id": "alice"}
        for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/messages", f"/api/sessions/{sid}/runs"):
            response = await http.get(path, headers=as_bob)
            assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error", path
        assert (await http.delete(f"/api/sessions/{sid}", headers=as_bob)).status_code == 404
        hijack = await http.post("/api/streaming/chat", json=CHAT | {"session_id": sid}, headers=as_bob)
        assert hijack.status_code == 404
        openai_hijack = await http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "x"}], "user": "alice"},
            headers=as_bob | {"X-Session-Id": sid},
        )
        assert openai_hijack.status_code == 404
        runs = (await http.get(f"/api/sessions/{sid}/runs", headers=bearer(keys["alice"]))).json()["runs"]
        run_id = runs[0]["run_id"]
        assert (await http.get(f"/api/streaming/runs/{run_id}/events", headers=as_bob)).status_code == 404
        assert (await http.get("/api/users/alice/memories", headers=as_bob)).status_code == 403
        listed = (await http.get("/api/sessions", headers=as_bob)).json()["data"]
        assert sid not in [s["session_id"] for s in listed]


async def test_admin_routes_need_an_admin_key(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    register = {"provider_id": "e2", "provider_type": "echo"}
    async with httpx.AsyncClient(base_url=url) as http:
        user = bearer(keys["alice"])
        for method, path, body in (
            ("POST", "/api/streaming/providers/register", register),
            ("DELETE", "/api/streaming/providers/echo", None),
            ("GET", "/api/stats", None),
            ("GET", "/api/streaming/providers/health", None),
        ):
            refused = await http.request(method, path, json=body, headers=user)
            assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error", path
        admin = bearer(keys["root"])
        assert (await http.post("/api/streaming/providers/register", json=register, headers=admin)).status_code == 201
        assert (await http.get("/api/stats", headers=admin)).status_code == 200
        assert (await http.get("/api/streaming/providers/health", headers=admin)).status_code == 200
        assert (await http.delete("/api/streaming/providers/e2", headers=admin)).status_code == 200
        assert (await http.get("/api/streaming/providers", headers=user)).status_code == 200  # listing is not admin


async def test_the_official_sdks_authenticate_with_a_relay_key(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=keys["alice"], max_retries=0)
    reply = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "via sdk"}])
    assert reply.choices[0].message.content == "via sdk"
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=url + "/v1", api_key="rk_nope", max_retries=0).models.list()
    claude = anthropic.AsyncAnthropic(base_url=url, api_key=keys["bob"], max_retries=0)  # sends x-api-key
    message = await claude.messages.create(
        model="echo", max_tokens=50, messages=[{"role": "user", "content": "via anthropic"}]
    )
    assert message.content[0].text == "via anthropic"  # type: ignore[union-attr]
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await anthropic.AsyncAnthropic(base_url=url, api_key="rk_nope", max_retries=0).messages.create(
            model="echo", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.body["type"] == "error"  # type: ignore[index]  # Anthropic's shape on its route


async def test_websocket_takes_the_key_as_a_query_parameter(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    ws_url = url.replace("http://", "ws://") + "/api/streaming/ws"
    async with websockets.connect(f"{ws_url}/alice?api_key={keys['alice']}") as ws:
        request = {"message_type": "chat_request", "request_id": "r1", "data": {"messages": CHAT["messages"]}}
        await ws.send(orjson.dumps(request).decode())
        text = ""
        async for raw in ws:
            message = orjson.loads(raw)
            event = message["data"].get("event_data") or {}
            text += event.get("content", "") if event.get("type") == "text-delta" else ""
            if event.get("type") == "finish" or message["message_type"] == "error":
                break
        assert text == "hello there"
    with pytest.raises(websockets.InvalidStatus) as no_key:
        async with websockets.connect(f"{ws_url}/alice"):
            pass
    assert no_key.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{ws_url}/alice?api_key=rk_wrong"):
            pass
    # bob's key on alice's path: the socket is closed with a policy violation before it opens
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{ws_url}/alice", additional_headers=bearer(keys["bob"])):
            pass


async def test_required_without_keys_refuses_everyone_but_the_admin_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_ADMIN_KEY", "admin-secret-123")
    config = settings(tmp_path, auth={"mode": "required", "cache_ttl_s": 0})
    with ServerThread(build_app(LocalBackend(config))) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.post("/api/streaming/chat", json=CHAT)).status_code == 401
            admin = bearer("admin-secret-123")
            assert (await http.get("/api/stats", headers=admin)).status_code == 200
            chat = await http.post("/api/streaming/chat", json=CHAT, headers=admin)
            session = await http.get(f"/api/sessions/{chat.headers['x-session-id']}", headers=admin)
            assert session.json()["user_id"] == "admin"


async def test_without_keys_a_loopback_server_stays_open_as_in_the_quick_start(tmp_path: Path) -> None:
    with ServerThread(build_app(LocalBackend(settings(tmp_path)))) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            chat = await http.post("/api/streaming/chat", json=CHAT, headers={"X-User-Id": "carol"})
            assert chat.status_code == 200
            session = await http.get(f"/api/sessions/{chat.headers['x-session-id']}", headers={"X-User-Id": "carol"})
            assert session.json()["user_id"] == "carol"
            assert (await http.get("/api/stats")).status_code == 200  # the local caller is the admin


def test_serve_refuses_a_public_bind_and_says_how_to_turn_auth_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123", "--data-dir", str(tmp_path)]) == 2
    assert "refusing to bind 0.0.0.0" in caplog.text
    assert "relay keys create --user NAME --admin" in caplog.text and "auth: required" in caplog.text


async def test_with_auth_a_body_user_id_may_only_name_the_keys_user(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    alice = bearer(keys["alice"])
    async with httpx.AsyncClient(base_url=url) as http:
        own = await http.post("/api/sessions", json={"user_id": "alice"}, headers=alice)
        assert own.status_code == 201 and own.json()["user_id"] == "alice"
        other = await http.post("/api/sessions", json={"user_id": "bob", "name": "not mine"}, headers=alice)
        assert other.status_code == 403
        error = other.json()["error"]
        assert error["param"] == "user_id" and error["type"] == "permission_error" and "'alice'" in error["message"]
        # nothing was created for bob, and the server keeps serving
        bobs = (await http.get("/api/sessions", headers=bearer(keys["bob"]))).json()["data"]
        assert bobs == []
        again = await http.post("/api/sessions", json={}, headers=alice)
        assert again.status_code == 201 and again.json()["user_id"] == "alice"


async def test_with_auth_the_chat_route_refuses_a_foreign_body_user_id(keyed: tuple[str, dict[str, str]]) -> None:
    url, keys = keyed
    alice = bearer(keys["alice"])
    async with httpx.AsyncClient(base_url=url) as http:
        chat = await http.post("/api/streaming/chat", json=CHAT | {"user_id": "bob"}, headers=alice)
        assert chat.status_code == 403 and chat.json()["error"]["param"] == "user_id"
        own = await http.post("/api/streaming/chat", json=CHAT | {"user_id": "alice"}, headers=alice)
        assert own.status_code == 200
        session = await http.get(f"/api/sessions/{own.headers['x-session-id']}", headers=alice)
        assert session.json()["user_id"] == "alice"
