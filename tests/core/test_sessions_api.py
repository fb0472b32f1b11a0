"""The session API over HTTP, in-process, on SQLite and on PostgreSQL; every route checks the owner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread

ALICE = {"X-User-Id": "alice"}
MALLORY = {"X-User-Id": "mallory"}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> LocalBackend:
    url = f"sqlite:///{tmp_path}/r.db" if request.param == "sqlite" else str(request.getfixturevalue("fresh_pg_url"))
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    return LocalBackend(RelaySettings(store_url=url, providers=[echo]))


@pytest.fixture
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


@pytest.fixture
async def http(server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server) as client:
        yield client


async def test_create_read_patch_with_etag_and_delete(http: httpx.AsyncClient, backend: LocalBackend) -> None:
    created = await http.post(
        "/api/sessions",
        json={"name": "trip", "agent_id": "planner", "session_data": {"step": 0}, "metadata": {"tier": "gold"}},
        headers=ALICE,
    )
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    session = created.json()
    sid = session["session_id"]
    assert session["user_id"] == "alice" and session["agent_id"] == "planner" and session["session_data"] == {"step": 0}
    assert set(session) >= {
        "team_id",
        "workflow_id",
        "summary",
        "summary_topics",
        "version",
        "created_at",
        "updated_at",
    }

    patched = await http.patch(
        f"/api/sessions/{sid}", json={"session_data": {"step": 1}}, headers=ALICE | {"If-Match": '"1"'}
    )
    assert (
        patched.status_code == 200
        and patched.headers["etag"] == '"2"'
        and patched.json()["session_data"] == {"step": 1}
    )
    stale = await http.patch(f"/api/sessions/{sid}", json={"session_data": {"step": 99}, "version": 1}, headers=ALICE)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
    assert (await http.get(f"/api/sessions/{sid}", headers=ALICE)).json()["session_data"] == {"step": 1}

    chat = await http.post(
        "/api/streaming/chat",
        json={"session_id": sid, "stream_format": "json", "messages": [{"role": "user", "content": "hello"}]},
        headers=ALICE,
    )
    assert chat.json()["content"] == "hello"
    assert (await http.delete(f"/api/sessions/{sid}", headers=ALICE)).status_code == 204
    assert (await http.get(f"/api/sessions/{sid}", headers=ALICE)).status_code == 404
    assert backend.store.messages(sid) == [] and backend.store.runs(sid) == []


async def test_listing_pages_with_a_cursor(http: httpx.AsyncClient) -> None:
    ids = [(await http.post("/api/sessions", json={}, headers=ALICE)).json()["session_id"] for _ in range(5)]
    await http.post("/api/sessions", json={}, headers=MALLORY)
    first = (await http.get("/api/sessions?limit=3", headers=ALICE)).json()
    assert [s["session_id"] for s in first["data"]] == ids[::-1][:3] and first["next_cursor"]
    rest = (await http.get(f"/api/sessions?limit=3&cursor={first['next_cursor']}", headers=ALICE)).json()
    assert [s["session_id"] for s in rest["data"]] == ids[::-1][3:] and rest["next_cursor"] is None
    other = await http.get("/api/sessions?user_id=alice", headers=MALLORY)
    assert other.status_code == 403 and other.json()["error"]["param"] == "user_id"


async def test_every_session_route_hides_another_users_session(http: httpx.AsyncClient) -> None:
    sid = (await http.post("/api/sessions", json={}, headers=ALICE)).json()["session_id"]
    for method, path, body in [
        ("GET", f"/api/sessions/{sid}", None),
        ("PATCH", f"/api/sessions/{sid}", {"name": "mine now"}),
        ("DELETE", f"/api/sessions/{sid}", None),
        ("GET", f"/api/sessions/{sid}/messages", None),
        ("GET", f"/api/sessions/{sid}/runs", None),
    ]:
        response = await http.request(method, path, json=body, headers=MALLORY)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["param"] == "session_id"
    hijack = await http.post(
        "/api/streaming/chat",
        json={"session_id": sid, "messages": [{"role": "user", "content": "x"}]},
        headers=MALLORY,
    )
    assert hijack.status_code == 404
    assert (await http.get(f"/api/sessions/{sid}", headers=ALICE)).json()["name"] is None


async def test_memories_routes_are_owner_only(http: httpx.AsyncClient, backend: LocalBackend) -> None:
    backend.store.add_memories("alice", ["likes tea", "lives in Oslo"], None)
    listed = (await http.get("/api/users/alice/memories", headers=ALICE)).json()
    assert [m["content"] for m in listed["memories"]] == ["likes tea", "lives in Oslo"]
    assert (await http.get("/api/users/alice/memories", headers=MALLORY)).status_code == 403
    one = listed["memories"][0]["memory_id"]
    assert (await http.delete(f"/api/users/alice/memories?memory_id={one}", headers=ALICE)).json()["deleted"] == 1
    assert (await http.delete("/api/users/alice/memories", headers=ALICE)).json()["deleted"] == 1


async def test_bad_session_bodies_name_the_field(http: httpx.AsyncClient) -> None:
    unknown = await http.post("/api/sessions", json={"colour": "red"}, headers=ALICE)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "colour"
    sid = (await http.post("/api/sessions", json={}, headers=ALICE)).json()["session_id"]
    bad_match = await http.patch(f"/api/sessions/{sid}", json={}, headers=ALICE | {"If-Match": "yesterday"})
    assert bad_match.status_code == 400 and bad_match.json()["error"]["param"] == "If-Match"
    typed = await http.patch(f"/api/sessions/{sid}", json={"session_data": [1, 2]}, headers=ALICE)
    assert typed.status_code == 400 and typed.json()["error"]["param"] == "session_data"


async def test_a_body_user_id_means_what_the_header_means_without_auth(http: httpx.AsyncClient) -> None:
    by_body = await http.post("/api/sessions", json={"user_id": "alice", "name": "from the body"})
    assert by_body.status_code == 201 and by_body.json()["user_id"] == "alice"
    by_both = await http.post("/api/sessions", json={"user_id": "alice"}, headers=ALICE)
    assert by_both.status_code == 201 and by_both.json()["user_id"] == "alice"
    listed = (await http.get("/api/sessions", headers=ALICE)).json()["data"]
    assert {by_body.json()["session_id"], by_both.json()["session_id"]} <= {s["session_id"] for s in listed}
    # the same rule on the chat route: the body's user owns the session it opens
    chat = await http.post(
        "/api/streaming/chat",
        json={
            "user_id": "alice",
            "provider_id": "echo",
            "stream_format": "json",
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert chat.status_code == 200
    assert (await http.get(f"/api/sessions/{chat.headers['x-session-id']}", headers=ALICE)).status_code == 200
    conflict = await http.post("/api/sessions", json={"user_id": "alice"}, headers=MALLORY)
    assert conflict.status_code == 400 and conflict.json()["error"]["param"] == "user_id"
    assert (await http.get("/api/sessions", headers=MALLORY)).json()["data"] == []
