"""Shared and dedicated pools: many providers in one deployment, registration as configuration, placement failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import ray
from ray import serve

from tests.fakes.openai_upstream import free_port
from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def http(relay: Relay) -> Any:
    async with httpx.AsyncClient(base_url=relay.url, timeout=120) as client:
        yield client


async def reply(http: httpx.AsyncClient, model: str, text: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return await http.post("/v1/chat/completions", json=body)


def text_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def register(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await http.post("/api/streaming/providers/register", json=body)


def apps() -> set[str]:
    return set(serve.status().applications)


def shared_replicas() -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "pool-shared" in a["name"]]


async def test_one_shared_pool_serves_many_providers_each_with_its_own_text(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    before = apps()
    providers = {
        "many-oa-1": {"provider_type": "openai_compatible", "model_name": "fake", "base_url": relay.upstream_url},
        "many-oa-2": {"provider_type": "openai_compatible", "model_name": "fake", "base_url": relay.upstream_url},
        "many-cl-1": {
            "provider_type": "anthropic",
            "model_name": "fake-claude",
            "base_url": relay.anthropic_url,
            "api_key": relay.anthropic.api_key,
        },
        "many-cl-2": {
            "provider_type": "anthropic",
            "model_name": "fake-claude",
            "base_url": relay.anthropic_url,
            "api_key": relay.anthropic.api_key,
        },
        "many-echo-1": {"provider_type": "echo", "model_name": "echo"},
        "many-echo-2": {"provider_type": "echo", "model_name": "echo"},
    }
    for provider_id, body in providers.items():
        created = await register(http, provider_id=provider_id, max_retries=0, **body)
        assert created.status_code == 201, created.text
    assert apps() == before  # registration is configuration: no Serve app, no process
    texts = await asyncio.gather(*(reply(http, p, f"exactly {p}, please") for p in providers))
    # The OpenAI fake sends each word with a trailing space; the Anthropic and echo ones the text as it came.
    exact = {p: f"exactly {p}, please" + (" " if p.startswith("many-oa") else "") for p in providers}
    assert dict(zip(providers, map(text_of, texts), strict=True)) == exact
    ready = (await http.get("/readyz")).json()
    pools = {pool["provider_id"]: pool for pool in ready["pools"]}
    assert {pools[p]["pool"] for p in providers} == {"pool-shared"} and pools["own"]["pool"] == "pool-own"
    # Each provider's own counters on the shared pool, as the balancer and /api/stats read them.
    stats = {p["provider_id"]: p for p in (await http.get("/api/stats")).json()["providers"]}
    assert stats["many-cl-1"]["provider_type"] == "anthropic" and stats["many-cl-1"]["completed"] >= 1
    health = {p["provider_id"]: p for p in (await http.get("/api/streaming/providers/health")).json()["providers"]}
    assert health["many-cl-2"]["ok"] and health["many-echo-1"]["ok"]
    for provider_id in providers:
        assert (await http.delete(f"/api/streaming/providers/{provider_id}")).status_code == 200


async def test_update_and_delete_take_effect_on_the_next_request_and_after_a_replica_restart(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every call fails to connect
    common = {"provider_id": "upd", "provider_type": "openai_compatible", "model_name": "fake", "max_retries": 0}
    assert (await register(http, base_url=dead, **common)).status_code == 201
    assert (await reply(http, "upd", "first")).status_code >= 500  # built, with the dead base_url, on a replica

    # An update is a delete and a new registration: the replica holding the old runtime builds the new one.
    assert (await http.delete("/api/streaming/providers/upd")).status_code == 200
    assert (await reply(http, "upd", "gone")).status_code == 404
    assert (await register(http, base_url=relay.upstream_url, **common)).status_code == 201
    assert text_of(await reply(http, "upd", "second")) == "second "

    # A replica that starts later reads the store: kill the shared pool's replica; Serve starts a fresh one.
    killed = set(shared_replicas())
    for name in killed:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    await await_until(  # a kill is asynchronous: Serve buries the killed replica, then starts its successor
        lambda: set(shared_replicas()),
        timeout_s=60,
        interval_s=0.1,
        what="Serve to replace the shared pool's replica",
        done=lambda names: bool(names) and not names & killed,
    )
    assert text_of(await reply(http, "upd", "third")) == "third "
    assert (await http.delete("/api/streaming/providers/upd")).status_code == 200
    assert (await reply(http, "upd", "fourth")).status_code == 404


async def test_a_hanging_provider_does_not_stall_its_neighbour_in_the_same_replica(
    relay: Relay, http: httpx.AsyncClient
) -> None:
    assert len(shared_replicas()) == 1  # both providers are streamed through this one replica
    common = {"provider_type": "openai_compatible", "base_url": relay.upstream_url, "max_retries": 0}
    assert (await register(http, provider_id="stuck", model_name="fake-hang", **common)).status_code == 201
    assert (await register(http, provider_id="calm", model_name="fake", **common)).status_code == 201
    before = sum(r["body"].get("model") == "fake-hang" for r in relay.upstream.requests)
    stuck = asyncio.create_task(reply(http, "stuck", "never mind"))
    deadline = time.monotonic() + 60
    while sum(r["body"].get("model") == "fake-hang" for r in relay.upstream.requests) == before:
        assert time.monotonic() < deadline, "the hanging stream never reached the upstream"
        await asyncio.sleep(0.05)
    body = {"model": "calm", "stream": True, "messages": [{"role": "user", "content": "still flowing"}]}
    async with http.stream("POST", "/v1/chat/completions", json=body) as streamed:
        chunks = [line async for line in streamed.aiter_lines() if line.startswith("data: {")]
    assert "".join(_delta(line) for line in chunks) == "still flowing "
    assert not stuck.done()  # the neighbour finished while this one still waits on its upstream
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    for provider_id in ("stuck", "calm"):
        assert (await http.delete(f"/api/streaming/providers/{provider_id}")).status_code == 200


def _delta(line: str) -> str:
    choices = orjson.loads(line[6:])["choices"]
    return str(choices[0]["delta"].get("content") or "") if choices else ""


async def test_a_pool_ray_cannot_place_is_refused_with_a_503_and_removed(relay: Relay, http: httpx.AsyncClient) -> None:
    common = {"provider_type": "echo", "model_name": "echo"}
    # No node has the resource at all: refused before anything is deployed.
    nowhere = await register(http, provider_id="nowhere", actor_resources={"no_such_node": 1}, **common)
    assert nowhere.status_code == 503, nowhere.text
    assert "no_such_node" in nowhere.json()["error"]["message"]
    # A node has the CPUs, but not free: deployed, unplaced for pool_placement_timeout_s, then removed.
    cpus = ray.cluster_resources()["CPU"]
    crowded = await register(http, provider_id="crowded", actor_resources={"CPU": cpus}, **common)
    assert crowded.status_code == 503, crowded.text
    assert "CPU" in crowded.json()["error"]["message"]
    removed = serve.status().applications.get("relay-provider-crowded")
    assert removed is None or removed.status.value == "DELETING"  # removal goes on after the 503
    listed = {p["provider_id"] for p in (await http.get("/api/streaming/providers")).json()["data"]}
    assert not {"nowhere", "crowded"} & listed
    # The next registration works as if nothing happened.
    assert (await register(http, provider_id="after", **common)).status_code == 201
    assert text_of(await reply(http, "after", "placed")) == "placed"
    assert (await http.delete("/api/streaming/providers/after")).status_code == 200


async def test_a_route_balances_over_a_dedicated_and_a_shared_pool(http: httpx.AsyncClient) -> None:
    served = set()
    for i in range(20):
        response = await http.post(
            "/api/streaming/chat", json={"model": "mixed", "messages": [{"role": "user", "content": f"both {i}"}]}
        )
        assert response.status_code == 200, response.text
        events = [line for line in response.text.splitlines() if line.startswith("data: ")]
        parsed = [orjson.loads(line[6:]) for line in events]
        provider = parsed[-1]["metrics"]["provider"]
        text = "".join(e["content"] for e in parsed if e["type"] == "text-delta")
        assert text == f"both {i}" + (" " if provider == "own" else "")  # own: the OpenAI fake, a space per word
        served.add(provider)
    assert served == {"own", "echo"}  # weights 1:1 over 20 turns: both pools, one dedicated, one shared
