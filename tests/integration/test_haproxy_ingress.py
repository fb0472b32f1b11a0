"""``relay serve --ingress haproxy``: Serve's HAProxy in front of the ingress replicas' own HTTP ports.

Its own cluster, started as a user starts it (a subprocess, auth on, loopback), beside the session's: HAProxy
mode is chosen when Ray starts, so it cannot share the session's cluster. What the Python proxy gives and
Relay relies on must hold through HAProxy too: exact streamed text, the WebSocket, the request id round
trip, a dropped client cancelling its run, auth, readiness, and the bind (relay.cli.serve.check_ingress).

A client leaving a *silent* stream (no bytes flowing: a model thinking, a tool running) is noticed only when
HAProxy next writes to it (benchmarks/README.md, "Lever 1"): an SSE stream's keep-alive line is that write, so
this Relay sends one after 1 s of silence. Not tested, because it does not hold: a silent NDJSON stream, which
has no line to send, is still missed now and then; with the loopback bind, it is why the Python proxy stays
the default.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from relay.http.auth import new_key
from relay.store import open_store
from tests.fakes.openai_upstream import free_port
from tests.integration.listeners import listeners, serving_relay
from tests.integration.sockets import cancel_one_of_two
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Ray 2.60's direct-ingress HTTP ports (serve/_private/constants.py RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT)
REPLICA_PORTS = range(30000, 31001)
# Ray 2.60's HAProxy template binds these on all interfaces (RAY_SERVE_HAPROXY_STATS_PORT, _METRICS_PORT)
HAPROXY_PUBLIC_PORTS = {8404, 9101}


@dataclass
class Served:
    url: str
    key: str
    pid: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("haproxy")
    store = open_store(f"sqlite:///{data_dir / 'relay.db'}")  # where `relay serve --data-dir` puts it
    key, digest, prefix = new_key()
    store.create_api_key("ada", digest, prefix, is_admin=True)
    store.close()
    config = yaml.safe_load((ROOT / "config" / "serve.yaml").read_text())
    config["applications"][0]["args"]["stream_keepalive_s"] = 1  # a silent SSE stream writes after 1 s
    (data_dir / "serve.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}  # a cluster of its own
    argv = [sys.executable, "-m", "relay.cli", "serve", "--ingress", "haproxy"]
    argv += ["--config", str(data_dir / "serve.yaml"), "--port", str(port), "--data-dir", str(data_dir)]
    server = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert server.poll() is None, server.communicate()[0]  # it died: say why at once
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout_s=300, interval_s=0.5, what="relay serve --ingress haproxy to be ready")
        yield Served(url, key, server.pid)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.communicate()


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {served.key}"}
    async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=60) as client:
        yield client


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_relays_app_answers_on_loopback_only(served: Served) -> None:
    """The frontend, every ingress replica's port and the fallback proxy on 127.0.0.1; beyond it, only the two
    HAProxy ports Ray 2.60 cannot hold to loopback, which is why a loopback bind without auth refuses HAProxy."""
    found = listeners(served.pid)
    relay_app = [item for item in found if serving_relay(item)]
    assert relay_app and all(item.address == "127.0.0.1" for item in relay_app), found
    ports = {item.port for item in relay_app}
    assert int(served.url.rsplit(":", 1)[1]) in ports and ports & set(REPLICA_PORTS), found
    public = {item.port for item in found if item.program == "haproxy" and not item.loopback}
    assert public == HAPROXY_PUBLIC_PORTS, found


async def test_auth_readiness_exact_sse_and_the_request_id(served: Served, http: httpx.AsyncClient) -> None:
    refused = await http.post("/v1/chat/completions", json=user("x", model="echo"), headers={"Authorization": ""})
    assert refused.status_code == 401
    assert (await http.get("/readyz")).json()["status"] == "ready"
    request_id = f"req_hap_{uuid.uuid4().hex[:12]}"
    body = user("through haproxy word by word", model="echo", stream=True)
    text, done = "", False
    headers = {"X-Request-Id": request_id}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200 and response.headers["x-request-id"] == request_id
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                text += orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    assert done and text == "through haproxy word by word"


async def test_a_websocket_streams_and_cancels(served: Served) -> None:
    url = served.url.replace("http://", "ws://") + f"/api/streaming/ws/ada?api_key={served.key}"
    finished, fast = await cancel_one_of_two(url, "over the socket")
    assert finished == {"slow": "cancelled", "fast": "stop"} and fast == "over the socket"


async def runs_after_a_drop(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    """The session's runs once a next turn has gone through: it waits for the session's turn lock, so it completes
    only once the dropped run is stored."""
    follow = await http.post(
        "/api/streaming/chat", headers={"X-Session-Id": sid}, json=user("after", stream_format="json")
    )
    assert follow.status_code == 200 and follow.json()["content"] == "after", follow.text
    return (await http.get(f"/api/sessions/{sid}/runs")).json()["runs"]  # type: ignore[no-any-return]


async def test_a_dropped_client_cancels_its_flowing_run(http: httpx.AsyncClient) -> None:
    """Tokens still flowing: HAProxy's next write to the gone client fails, and it closes the replica's side."""
    body = user(" ".join(["w"] * 200), provider_options={"tokens_per_s": 4}, stream_format="ndjson")
    async with http.stream("POST", "/api/streaming/chat", json=body) as response:
        sid = response.headers["x-session-id"]
        lines = response.aiter_lines()
        assert orjson.loads(await anext(lines))["status"] == "started"
        assert orjson.loads(await anext(lines))["type"] == "text-delta"
    cancelled, completed = await runs_after_a_drop(http, sid)
    assert cancelled["status"] == "cancelled" and cancelled["output"].startswith("w ")
    assert len(cancelled["output"].split()) < 200 and completed["status"] == "completed"


async def test_dropped_clients_cancel_their_silent_sse_runs(http: httpx.AsyncClient) -> None:
    """No tokens flowing (echo hangs after two): the keep-alive line is the write that tells HAProxy the client left.

    Eight drops at once: without keep-alive lines about one in four or five is missed (benchmarks/README.md).
    """

    async def drop() -> list[dict[str, Any]]:
        body = user("a b c d e f", provider_options={"fault": "hang", "fault_after": 2})
        async with http.stream("POST", "/api/streaming/chat", json=body) as response:
            sid = response.headers["x-session-id"]
            async for line in response.aiter_lines():
                if line.startswith("data: ") and orjson.loads(line[6:])["type"] == "text-delta":
                    break
        return await runs_after_a_drop(http, sid)

    for cancelled, completed in await asyncio.gather(*(drop() for _ in range(8))):
        assert cancelled["status"] == "cancelled" and cancelled["output"].startswith("a ")
        assert completed["status"] == "completed"
