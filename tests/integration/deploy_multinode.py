"""Deploy ``config/serve.yaml`` on a three-node cluster, as ``relay serve`` does, and serve across the nodes.

Run by ``test_deploy.py`` in its own process (one Ray cluster per process). The head
advertises no CPU, as ``cluster.yaml``'s head does, so the ingress and the pools land on the
workers while the HTTP proxy stays on the head (``proxy_location: HeadOnly``): every request
crosses nodes. Prints one JSON line of figures; exits non-zero when a check failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve
from ray._private import state
from ray.cluster_utils import Cluster

from actors.deploy import deploy_config
from relay.cli.serve import load_serve_config
from relay.store import open_store
from tests.fakes.openai_upstream import free_port

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 6


def placements(head: str, workers: list[str]) -> dict[str, list[str]]:
    """Where each kind of live actor runs: ``head`` or ``worker-N``, from the GCS's actor table."""
    names = {head: "head"} | {node: f"worker-{i + 1}" for i, node in enumerate(workers)}
    where: dict[str, list[str]] = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        kind = actor["ActorClassName"].removeprefix("ServeReplica:relay:")
        where.setdefault(kind, []).append(names.get(actor["Address"]["NodeID"], "?"))
    return {kind: sorted(nodes) for kind, nodes in sorted(where.items())}


async def readiness(http: httpx.AsyncClient, status: int, deadline_s: float = 60.0) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers ``status`` (a pool's replica comes and goes on Serve's schedule)."""
    deadline = time.monotonic() + deadline_s
    while True:
        response = await http.get("/readyz")
        if response.status_code == status or time.monotonic() > deadline:
            return response.json() | {"http": response.status_code}
        await asyncio.sleep(0.2)


async def scenario(url: str, store_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        ready = await readiness(http, 200)

        async def send(user: str, session_id: str | None, text: str) -> dict[str, Any]:
            body = {"session_id": session_id, "stream_format": "json", "messages": [{"role": "user", "content": text}]}
            response = await http.post("/api/streaming/chat", json=body, headers={"X-User-Id": user})
            return response.json() | {"http": response.status_code}

        first = await asyncio.gather(*(send(f"user-{i}", None, f"first {i}") for i in range(SESSIONS)))
        sessions = {f"user-{i}": reply["session_id"] for i, reply in enumerate(first)}
        second = await asyncio.gather(*(send(user, sid, f"second {user}") for user, sid in sessions.items()))
        served = sum(
            reply["http"] == 200 and reply["content"] == f"first {i}" for i, reply in enumerate(first)
        ) + sum(
            reply["http"] == 200 and reply["content"] == f"second {user}"
            for reply, user in zip(second, sessions, strict=True)
        )

        # Readiness names a pool that lost its replicas: register one, delete its Serve app behind Relay's back.
        extra = {"provider_id": "extra", "provider_type": "echo", "dedicated": True}  # a pool of its own to lose
        registered = await http.post("/api/streaming/providers/register", json=extra)
        with_extra = await readiness(http, 200)
        serve.delete("relay-provider-extra")
        without_replica = await readiness(http, 503)
        await http.delete("/api/streaming/providers/extra")
        recovered = await readiness(http, 200)

    store = open_store(store_url)
    histories = sum(
        [m["content"] for m in store.messages(sid)] == [f"first {i}"] * 2 + [f"second user-{i}"] * 2
        for i, sid in enumerate(sessions.values())
    )
    return {
        "ready_pools": [pool["provider_id"] for pool in ready["pools"]] if ready["http"] == 200 else ready,
        "chats_served": served,
        "chats_sent": 2 * SESSIONS,
        "histories_whole": histories,
        "registered": registered.status_code,
        "ready_with_extra": with_extra["http"],
        "not_ready_reason": without_replica.get("reason"),
        "not_ready_status": without_replica["http"],
        "ready_again": recovered["http"],
    }


def main() -> int:
    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "redis_port": free_port()},
    )
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, namespace="serve", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as data:
            port = free_port()
            config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=Path(data))
            args = config["applications"][0]["args"]
            if os.environ.get("RELAY_STORE_URL"):
                args["store_url"] = os.environ["RELAY_STORE_URL"]
            cluster_s = time.perf_counter() - started
            deploy_started = time.perf_counter()
            deploy_config(config)
            deploy_s = time.perf_counter() - deploy_started
            figures = asyncio.run(scenario(f"http://127.0.0.1:{port}", args["store_url"]))
            figures["placements"] = placements(cluster.head_node.node_id, [w.node_id for w in workers])
            serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    figures |= {"cluster_start_s": round(cluster_s, 1), "deploy_s": round(deploy_s, 1)}
    print(json.dumps(figures))
    where = figures["placements"]
    checks = [
        figures["chats_served"] == figures["chats_sent"],
        figures["histories_whole"] == SESSIONS,
        where.get("ProxyActor") == ["head"],
        bool(where.get("Ingress")) and "head" not in where["Ingress"],
        bool(where.get("pool-shared")) and "head" not in where["pool-shared"],
        figures["not_ready_status"] == 503 and figures["ready_again"] == 200,
    ]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
