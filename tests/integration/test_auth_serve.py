"""Auth, limits, metrics and logs through Ray Serve, on a second Relay app with auth required.

The shared app runs open (no keys); this module deploys its own app under
``/secure`` on the same cluster, with two ingress replicas, so that a limit is
seen to hold across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import ray
import websockets
from ray import serve

from actors.limiter import limiter_name
from relay.http.auth import new_key
from relay.store import open_store
from serve_app import app as relay_app
from tests.conftest import pg_schema
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread
from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration

APP = "secure"
PLANTED_PROVIDER_KEY = "sk-proj-PLANTEDserve00000000000000qrst"


@dataclass
class Secure:
    url: str
    keys: dict[str, str]
    keyed_upstream: str


@pytest.fixture(scope="module")
def secure(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    stack = contextlib.ExitStack()
    if os.environ.get("RELAY_TEST_STORE") == "postgres":
        store_url = stack.enter_context(pg_schema())
    else:
        store_url = f"sqlite:///{tmp_path_factory.mktemp('secure')}/secure.db"
    store = open_store(store_url)
    keys = {}
    for user, admin in (("alice", False), ("bob", False), ("carol", False), ("dave", False), ("root", True)):
        keys[user], digest, prefix = new_key()
        store.create_api_key(user, digest, prefix, is_admin=admin)
    upstream = stack.enter_context(ServerThread(FakeOpenAI(api_key=PLANTED_PROVIDER_KEY).app))
    args = {
        "store_url": store_url,
        "providers": [{"provider_id": "echo", "provider_type": "echo", "model": "echo"}],
        "auth": {"mode": "required", "cache_ttl_s": 0},
        # limiter_timeout_s: on this 2-core machine a busy moment must not let a turn through unlimited
        "limits": {
            "users": {"carol": {"requests_per_min": 2}, "dave": {"concurrent_streams": 1}},
            "limiter_timeout_s": 60,
        },
        "sessions": {"warm_pool_size": 1, "idle_ttl_s": 3600},
        "ingress_replicas": 2,
    }
    serve.run(relay_app(args), name=APP, route_prefix=f"/{APP}")
    try:
        yield Secure(f"{relay.url}/{APP}", keys, upstream.url + "/v1")
    finally:
        serve.delete(APP)
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(limiter_name(APP)))
        stack.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def http(secure: Secure) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secure.url, timeout=60) as client:
        yield client


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"provider_id": "echo", "messages": [{"role": "user", "content": text}], "stream_format": "json", **extra}


async def test_a_missing_or_wrong_key_is_401_and_a_right_one_streams(secure: Secure, http: httpx.AsyncClient) -> None:
    missing = await http.post("/api/streaming/chat", json=chat("x"))
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = await http.post("/api/streaming/chat", json=chat("x"), headers=bearer(new_key()[0]))
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert (await http.get("/healthz")).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=secure.url + "/v1", api_key="rk_wrong", max_retries=0).models.list()
    client = openai.AsyncOpenAI(base_url=secure.url + "/v1", api_key=secure.keys["alice"], max_retries=0)
    stream = await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "through serve"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "through serve"


async def test_another_users_session_is_404(secure: Secure, http: httpx.AsyncClient) -> None:
    alice, bob = bearer(secure.keys["alice"]), bearer(secure.keys["bob"]) | {"X-User-Id": "alice"}
    first = await http.post("/api/streaming/chat", json=chat("mine"), headers=alice)
    sid = first.headers["x-session-id"]
    assert first.status_code == 200 and (await http.get(f"/api/sessions/{sid}", headers=alice)).status_code == 200
    assert (await http.get(f"/api/sessions/{sid}", headers=bob)).status_code == 404
    assert (await http.get(f"/api/sessions/{sid}/messages", headers=bob)).status_code == 404
    hijack = await http.post("/api/streaming/chat", json=chat("theirs", session_id=sid), headers=bob)
    assert hijack.status_code == 404 and hijack.json()["error"]["type"] == "not_found_error"
    messages = (await http.get(f"/api/sessions/{sid}/messages", headers=alice)).json()["messages"]
    assert [m["content"] for m in messages] == ["mine", "mine"]  # the user's and echo's: nothing of bob's


async def test_admin_routes_refuse_a_user_key_and_admit_the_admin(secure: Secure, http: httpx.AsyncClient) -> None:
    user, admin = bearer(secure.keys["alice"]), bearer(secure.keys["root"])
    registration = {
        "provider_id": "keyed",
        "provider_type": "openai_compatible",
        "model_name": "fake",
        "base_url": secure.keyed_upstream,
        "api_key": PLANTED_PROVIDER_KEY,
        "max_retries": 0,
    }
    for method, path, body in (
        ("GET", "/api/stats", None),
        ("GET", "/api/streaming/providers/health", None),
        ("POST", "/api/streaming/providers/register", registration),
        ("DELETE", "/api/streaming/providers/echo", None),
    ):
        refused = await http.request(method, path, json=body, headers=user)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error", path
    stats = await http.get("/api/stats", headers=admin)
    assert stats.status_code == 200 and stats.json()["sessions"]["live"] >= 0
    created = await http.post("/api/streaming/providers/register", json=registration, headers=admin)
    assert created.status_code == 201 and PLANTED_PROVIDER_KEY not in created.text
    keyed = await http.post("/api/streaming/chat", json=chat("keyed hello", provider_id="keyed"), headers=user)
    assert keyed.status_code == 200 and keyed.json()["content"]  # the planted key reached the upstream


async def test_requests_per_minute_hold_across_both_ingress_replicas(secure: Secure, http: httpx.AsyncClient) -> None:
    ingress = serve.status().applications[APP].deployments["Ingress"]
    assert ingress.replica_states.get("RUNNING") == 2
    carol = bearer(secure.keys["carol"])
    burst = [http.post("/api/streaming/chat", json=chat("hi"), headers=carol) for _ in range(12)]
    responses = await asyncio.gather(*burst)
    assert sorted(r.status_code for r in responses) == [200] * 2 + [429] * 10
    refused = [r for r in responses if r.status_code == 429]
    assert all(25 <= int(r.headers["retry-after"]) <= 30 for r in refused)  # one request per 30 s
    assert all(r.json()["error"]["code"] == "requests_per_min" for r in refused)
    counted = await ray.get_actor(limiter_name(APP)).snapshot.remote("carol")
    assert counted["refused"]["requests_per_min"] == 10  # one actor saw every replica's requests
    other = await http.post("/api/streaming/chat", json=chat("hi"), headers=bearer(secure.keys["alice"]))
    assert other.status_code == 200


async def test_a_second_stream_waits_for_the_first(secure: Secure, http: httpx.AsyncClient) -> None:
    dave = bearer(secure.keys["dave"])
    slow = chat("one two three four five six", stream_format="sse", provider_options={"tokens_per_s": 3})
    async with http.stream("POST", "/api/streaming/chat", json=slow, headers=dave) as first:
        assert first.status_code == 200
        second = await http.post("/api/streaming/chat", json=chat("two"), headers=dave)
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert "1 streams open" in second.json()["error"]["message"]
        await first.aread()
    again = await await_until(  # the lease is released when the ingress sees the stream end
        lambda: http.post("/api/streaming/chat", json=chat("two"), headers=dave),
        timeout_s=30,
        interval_s=0.05,
        what="the stream's lease to be released",
        done=lambda response: response.status_code != 429,
    )
    assert again.status_code == 200


async def test_the_websocket_takes_the_key_as_a_query_parameter(secure: Secure) -> None:
    url = secure.url.replace("http://", "ws://") + "/api/streaming/ws/alice"
    async with websockets.connect(f"{url}?api_key={secure.keys['alice']}") as ws:
        request = {"message_type": "chat_request", "request_id": "r1", "data": {"messages": chat("ws hi")["messages"]}}
        await ws.send(orjson.dumps(request).decode())
        text = ""
        async for raw in ws:
            event = orjson.loads(raw)["data"].get("event_data") or {}
            text += event.get("content", "") if event.get("type") == "text-delta" else ""
            if event.get("type") == "finish":
                break
        assert text == "ws hi"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url):
            pass
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{url}?api_key={secure.keys['bob']}"):  # bob's key, alice's path
            pass


def metric_lines(name: str) -> list[str]:
    port = ray.nodes()[0]["MetricsExportPort"]
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [line for line in body.splitlines() if line.startswith(name + "{")]


async def test_prometheus_metrics_come_from_the_ingress_and_the_pools(secure: Secure, http: httpx.AsyncClient) -> None:
    alice = bearer(secure.keys["alice"])
    assert (await http.post("/api/streaming/chat", json=chat("count me"), headers=alice)).status_code == 200
    wanted = {
        "ray_relay_http_requests_total": 'route="/api/streaming/chat"',
        "ray_relay_rate_limited_total": 'reason="requests_per_min"',
        "ray_relay_ttft_seconds_bucket": 'provider="echo"',
        "ray_relay_tokens_total": 'kind="output"',
        "ray_relay_provider_requests_total": 'provider="echo"',
        "ray_relay_sessions": 'state="live"',
        "ray_relay_pool_replicas": 'provider="echo"',
    }
    missing = dict(wanted)

    async def not_exported() -> list[str]:
        for name, label in list(missing.items()):
            if any(label in line for line in await asyncio.to_thread(metric_lines, name)):
                del missing[name]
        return sorted(missing)

    # Ray's agent exports every few seconds; the gauges update every 5 s
    await await_until(not_exported, timeout_s=90, interval_s=1.0, what="all exported", done=lambda left: not left)
    ok = [line for line in metric_lines("ray_relay_http_requests_total") if 'status="200"' in line]
    assert ok and all(float(line.rsplit(" ", 1)[1]) >= 1 for line in ok)


async def test_one_request_id_in_the_ingress_and_pool_logs_and_no_key_in_any_log(
    secure: Secure, http: httpx.AsyncClient
) -> None:
    request_id = f"req_flow_{uuid.uuid4().hex[:12]}"
    headers = bearer(secure.keys["alice"]) | {"X-Request-Id": request_id}
    reply = await http.post("/api/streaming/chat", json=chat("trace me"), headers=headers)
    assert reply.status_code == 200 and reply.headers["x-request-id"] == request_id
    refused = await http.post("/api/streaming/chat", json=chat("x"), headers={"x-api-key": secure.keys["alice"] + "x"})
    assert refused.status_code == 401
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    lines = await await_until(
        lambda: asyncio.to_thread(grep, logs, request_id),
        timeout_s=60,
        interval_s=0.5,
        what=f"the ingress and the pool to log {request_id}",
        done=lambda lines: {"relay.ingress", "relay.providers.telemetry"} <= {line.get("logger") for line in lines},
    )
    pool_line = next(line for line in lines if line.get("logger") == "relay.providers.telemetry")
    assert pool_line["provider"] == "echo" and pool_line["output_tokens"] > 0
    secrets = [PLANTED_PROVIDER_KEY, *secure.keys.values()]
    leaked = await asyncio.to_thread(files_containing, logs, secrets)
    assert leaked == [], f"a key was written to {leaked}"


def grep(logs: Path, needle: str) -> list[dict[str, Any]]:
    found = []
    for path in logs.rglob("*"):
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if needle in line and line.lstrip().startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    found.append(orjson.loads(line[line.index("{") :]))
    return found


def files_containing(logs: Path, secrets: list[str]) -> list[str]:
    return [
        str(path)
        for path in logs.rglob("*")
        if path.is_file() and any(secret in path.read_text(errors="replace") for secret in secrets)
    ]
