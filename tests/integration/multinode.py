"""A three-node cluster on one machine: remove the worker holding live sessions, count what survives.

Run by ``test_multinode.py`` in its own process (one Ray cluster per process).
Prints one JSON line of figures; exits non-zero when a session lost or garbled a turn, was
activated twice, or was not reactivated on another node.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve
from ray.cluster_utils import Cluster

from actors.deploy import deploy_config
from relay.cli.serve import load_serve_config
from relay.store import open_store
from tests.fakes.openai_upstream import free_port

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 8


def config(data_dir: Path, port: int) -> dict[str, Any]:
    serve_config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=data_dir)
    application = serve_config["applications"][0]
    args = application["args"]
    if os.environ.get("RELAY_STORE_URL"):
        args["store_url"] = os.environ["RELAY_STORE_URL"]
    args["providers"] = [{"provider_id": "echo", "provider_type": "echo", "model": "echo"}]
    # Session actors only on the workers (they alone have "sessions"); Serve's replicas stay on the head.
    args["sessions"] = {"warm_pool_size": 2, "idle_ttl_s": 3600, "max_actors": 6, "actor_resources": {"sessions": 1}}
    for deployment in application["deployments"]:
        if deployment["name"] == "SessionDirectory":
            deployment["ray_actor_options"] = {"num_cpus": 0, "resources": {"head": 0.01}}
    return serve_config


async def send(http: httpx.AsyncClient, user: str, session_id: str, text: str) -> dict[str, Any]:
    response = await http.post(
        "/api/streaming/chat",
        json={"session_id": session_id, "stream_format": "json", "messages": [{"role": "user", "content": text}]},
        headers={"X-User-Id": user},
    )
    response.raise_for_status()
    return response.json()


async def scenario(cluster: Cluster, url: str, store_url: str) -> dict[str, Any]:
    directory = serve.get_deployment_handle("SessionDirectory", app_name="relay")
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        owners = {}
        for i in range(SESSIONS):
            user = f"node-user-{i % 4}"
            created = await http.post("/api/sessions", json={}, headers={"X-User-Id": user})
            owners[created.json()["session_id"]] = user
        for turn in range(2):
            await asyncio.gather(*(send(http, user, sid, f"{sid} turn {turn}") for sid, user in owners.items()))

        async def node_of(sid: str) -> str | None:
            actor = await directory.locate.remote(sid)
            return str(await actor.node_id.remote()) if actor is not None else None

        before = {sid: await node_of(sid) for sid in owners}
        victim_id = max({node for node in before.values() if node}, key=list(before.values()).count)
        victim = next(node for node in cluster.worker_nodes if node.node_id == victim_id)
        doomed = [sid for sid, node in before.items() if node == victim_id]
        cluster.remove_node(victim)

        async def timed(sid: str, user: str) -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            reply = await send(http, user, sid, f"{sid} turn 2")
            return reply, time.perf_counter() - started

        started = time.perf_counter()
        results = await asyncio.gather(*(timed(sid, user) for sid, user in owners.items()))
        recovery_s = time.perf_counter() - started
        replies = [reply for reply, _ in results]
        took = dict(zip(owners, (elapsed for _, elapsed in results), strict=True))
        after = {sid: await node_of(sid) for sid in owners}
        activations = await directory.activations.remote(list(owners))
        stats = await directory.stats.remote()

    others = [took[sid] for sid in owners if sid not in doomed]
    store = open_store(store_url)
    lost = inexact = 0
    for sid in owners:
        history = [m["content"] for m in store.messages(sid)]
        expected = [f"{sid} turn {t}" for t in range(3) for _ in ("user", "assistant")]
        lost += sum(1 for t in range(3) if f"{sid} turn {t}" not in history)
        inexact += history != expected
    return {
        "sessions": SESSIONS,
        "nodes": 3,
        "on_removed_node": len(doomed),
        "reactivated_elsewhere": sum(after[sid] not in (victim_id, None) for sid in doomed),
        "not_live_after_third_turn": sum(node is None for node in after.values()),
        "lost_turns": lost,
        "histories_not_exact": inexact,  # a repeated, reordered or foreign message
        "wrong_replies": sum(reply["content"] != f"{sid} turn 2" for reply, sid in zip(replies, owners, strict=True)),
        "double_activations": sum(max(0, n - 1) for n in activations.values()),
        "passivations": stats["passivations"],
        "third_turn_all_sessions_s": round(recovery_s, 2),
        "third_turn_moved_sessions_max_s": round(max(took[sid] for sid in doomed), 2) if doomed else None,
        "third_turn_other_sessions_max_s": round(max(others), 2) if others else None,
    }


async def shut_down_after(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Serve's throughput mode runs a handle's router on the loop that made it: shut down before it closes."""
    try:
        return await work
    finally:
        await serve.shutdown_async()


Scenario = Callable[[Cluster, str, str], Coroutine[Any, Any, dict[str, Any]]]


def on_three_nodes(make_config: Callable[[Path, int], dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    """A head (2 CPUs) and two CPU-less nodes for session actors; ``make_config``'s app deployed; ``scenario``'s
    figures, given the cluster, the app's URL and its store URL."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"head": 1}, "include_dashboard": False, "redis_port": free_port()},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=0, resources={"sessions": 100})
    ray.init(address=cluster.address, namespace="serve", log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as data:
            port = free_port()
            serve_config = make_config(Path(data), port)
            deploy_config(serve_config)
            store_url = serve_config["applications"][0]["args"]["store_url"]
            return asyncio.run(shut_down_after(scenario(cluster, f"http://127.0.0.1:{port}", store_url)))
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> int:
    figures = on_three_nodes(config, scenario)
    print(json.dumps(figures))
    failures = ("lost_turns", "histories_not_exact", "wrong_replies", "double_activations", "not_live_after_third_turn")
    whole = all(figures[name] == 0 for name in failures)
    return 0 if whole and figures["reactivated_elsewhere"] == figures["on_removed_node"] else 1


if __name__ == "__main__":
    sys.exit(main())
