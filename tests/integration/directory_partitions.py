"""Two directory partitions on a three-node cluster: new sessions spread over both and are activated once, 200
concurrent sends activate nobody twice, and killing one partition's replica mid-traffic loses no acknowledged turn.

Run by ``test_directory_partitions.py`` in its own process (one Ray cluster per process). Prints one JSON line of
figures; exits non-zero when a turn was lost or unanswered, a session was activated twice or hosted twice, or a
partition activated a session that is not its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import ray
from ray.cluster_utils import Cluster

from actors.names import directory_name
from actors.partitions import DirectoryPartitions, partition_of
from relay.cli.serve import load_serve_config
from relay.store import open_store
from tests.integration.multinode import on_three_nodes

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
SESSIONS = 20  # new sessions, each routed by its minted id
TURNS = 6  # per session in the kill phase
KILL_AFTER = 30  # acknowledged turns of the kill phase before the partition's replica is killed
RETRIES = 10  # a client resends a turn that failed, as the error event tells it to


def config(data_dir: Path, port: int) -> dict[str, Any]:
    serve_config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=data_dir)
    application = serve_config["applications"][0]
    args = application["args"]
    if os.environ.get("RELAY_STORE_URL"):
        args["store_url"] = os.environ["RELAY_STORE_URL"]
    args["providers"] = [{"provider_id": "echo", "provider_type": "echo", "model": "echo"}]
    # Session actors only on the workers; the partitions on the head, so a kill takes a replica, not a node.
    args["sessions"] = {
        "warm_pool_size": 2,
        "idle_ttl_s": 3600,
        "max_actors": 6,
        "actor_resources": {"sessions": 1},
        "directory_partitions": PARTITIONS,
    }
    head_only = {"num_cpus": 0, "resources": {"head": 0.01}}
    application["deployments"] = [d for d in application["deployments"] if d["name"] != "SessionDirectory"] + [
        {"name": directory_name(i), "num_replicas": 1, "ray_actor_options": head_only} for i in range(PARTITIONS)
    ]
    return serve_config


async def send(http: httpx.AsyncClient, user: str, session_id: str | None, text: str) -> httpx.Response:
    body: dict[str, Any] = {"stream_format": "json", "messages": [{"role": "user", "content": text}]}
    if session_id is not None:
        body["session_id"] = session_id
    return await http.post("/api/streaming/chat", json=body, headers={"X-User-Id": user})


async def hosted(directory: DirectoryPartitions) -> Counter[str]:
    """How many actors host each session, over every partition's actors."""
    found: Counter[str] = Counter()
    for actor in await directory.actors():
        found.update(await actor.hosted.remote())
    return found


async def spread(http: httpx.AsyncClient, directory: DirectoryPartitions) -> tuple[dict[str, str], dict[str, Any]]:
    """New sessions (no id sent): the ingress mints each id and activates it on the partition that owns it."""
    replies = await asyncio.gather(*(send(http, f"spread-{i % 4}", None, f"hello {i}") for i in range(SESSIONS)))
    owners = {reply.json()["session_id"]: f"spread-{i % 4}" for i, reply in enumerate(replies)}
    activations = await directory.activations(list(owners))
    foreign = 0
    for sid in owners:
        for index, handle in enumerate(directory.handles):
            if index != partition_of(sid, PARTITIONS) and await handle.locate.remote(sid) is not None:
                foreign += 1
    per_partition = [await handle.stats.remote() for handle in directory.handles]
    return owners, {
        "sessions": SESSIONS,
        "ok": sum(reply.status_code == 200 for reply in replies),
        "per_partition": [sum(partition_of(sid, PARTITIONS) == i for sid in owners) for i in range(PARTITIONS)],
        "activations_per_partition": [stats["activations"] for stats in per_partition],
        "double_activations": sum(max(0, n - 1) for n in activations.values()),
        "not_activated": sum(n == 0 for n in activations.values()),
        "live_on_a_foreign_partition": foreign,
    }


async def crowd(http: httpx.AsyncClient, directory: DirectoryPartitions) -> dict[str, Any]:
    """200 concurrent sends to 10 sessions of 5 users, as tests/integration/test_failures.py sends to one directory."""
    users = [f"crowd-{u}" for u in range(5)]
    sessions = [
        (user, (await http.post("/api/sessions", json={}, headers={"X-User-Id": user})).json()["session_id"])
        for user in users
        for _ in range(2)
    ]
    sends = [(user, sid, f"{sid}#{k}") for k in range(20) for user, sid in sessions]
    statuses = [r.status_code for r in await asyncio.gather(*(send(http, *s) for s in sends))]
    ids = [sid for _, sid in sessions]
    counts = await directory.activations(ids)
    on_actors = await hosted(directory)
    return {
        "sends": len(sends),
        "ok": statuses.count(200),
        "per_partition": [sum(partition_of(sid, PARTITIONS) == i for sid in ids) for i in range(PARTITIONS)],
        "double_activations": sum(max(0, n - 1) for n in counts.values()),
        "hosted_twice": sum(on_actors[sid] > 1 for sid in ids),
    }


def replica_name(partition: int) -> str:
    mark = f"#{directory_name(partition)}#"
    return next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if mark in a["name"])


async def kill_mid_traffic(
    http: httpx.AsyncClient, directory: DirectoryPartitions, owners: dict[str, str], store_url: str
) -> dict[str, Any]:
    """Every session takes TURNS turns, resending a failed one; partition 1's replica is killed after KILL_AFTER."""
    acknowledged: dict[str, list[str]] = {sid: [] for sid in owners}
    unanswered: list[str] = []
    resends = 0
    slowest = dict.fromkeys(range(PARTITIONS), 0.0)
    enough = asyncio.Event()
    victim = replica_name(1)
    before = [await handle.stats.remote() for handle in directory.handles]

    async def talk(sid: str, user: str) -> None:
        nonlocal resends
        for turn in range(TURNS):
            text = f"{sid} turn {turn}"
            started = time.perf_counter()
            for _ in range(RETRIES):
                reply = await send(http, user, sid, text)
                if reply.status_code == 200 and reply.json()["content"] == text:
                    acknowledged[sid].append(text)
                    break
                resends += 1
            else:
                unanswered.append(text)
            part = partition_of(sid, PARTITIONS)
            slowest[part] = max(slowest[part], time.perf_counter() - started)
            if sum(map(len, acknowledged.values())) >= KILL_AFTER:
                enough.set()

    async def kill() -> float:
        await enough.wait()
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        return time.perf_counter()

    started = time.perf_counter()
    killed_at, *_ = await asyncio.gather(kill(), *(talk(sid, user) for sid, user in owners.items()))
    wall = time.perf_counter() - started
    activations = await directory.activations(list(owners))
    on_actors = await hosted(directory)
    after = [await handle.stats.remote() for handle in directory.handles]

    store = open_store(store_url)
    lost = out_of_order = 0
    for sid, texts in acknowledged.items():
        history = [(m["role"], m["content"]) for m in store.messages(sid)]
        lost += sum(1 for text in texts if not {("user", text), ("assistant", text)} <= set(history))
        firsts = [content for role, content in history if role == "assistant" and content in texts]
        out_of_order += list(dict.fromkeys(firsts)) != texts
    return {
        "sessions": len(owners),
        "turns": len(owners) * TURNS,
        "acknowledged": sum(map(len, acknowledged.values())),
        "unanswered": len(unanswered),
        "resends": resends,
        "lost_acknowledged_turns": lost,
        "histories_out_of_order": out_of_order,
        "double_activations": sum(max(0, n - 1) for n in activations.values()),
        "hosted_twice": sum(n > 1 for n in on_actors.values()),
        "replica_replaced": replica_name(1) != victim,
        # partition 0 kept its sessions live: the kill touched only partition 1's
        "partition_0_reactivations": after[0]["reactivations"] - before[0]["reactivations"],
        "partition_1_activations_after_kill": after[1]["activations"],
        "slowest_turn_s": [round(slowest[i], 2) for i in range(PARTITIONS)],
        "kill_after_s": round(killed_at - started, 2),
        "wall_s": round(wall, 2),
    }


async def scenario(_: Cluster, url: str, store_url: str) -> dict[str, Any]:
    directory = DirectoryPartitions.of_app("relay", PARTITIONS)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        owners, spread_figures = await spread(http, directory)
        crowd_figures = await crowd(http, directory)
        kill_figures = await kill_mid_traffic(http, directory, owners, store_url)
        merged = await directory.stats()
    return {
        "partitions": PARTITIONS,
        "nodes": 3,
        "spread": spread_figures,
        "concurrent_sends": crowd_figures,
        "kill_partition": kill_figures,
        "merged_max_actors": merged["max_actors"],
    }


def whole(figures: dict[str, Any]) -> bool:
    spread, crowd, kill = figures["spread"], figures["concurrent_sends"], figures["kill_partition"]
    return (
        spread["ok"] == SESSIONS
        and min(spread["per_partition"]) > 0
        and spread["activations_per_partition"] == spread["per_partition"]
        and spread["double_activations"] == spread["not_activated"] == spread["live_on_a_foreign_partition"] == 0
        and crowd["ok"] == crowd["sends"]
        and crowd["double_activations"] == crowd["hosted_twice"] == 0
        and kill["unanswered"] == kill["lost_acknowledged_turns"] == kill["histories_out_of_order"] == 0
        and kill["double_activations"] == kill["hosted_twice"] == kill["partition_0_reactivations"] == 0
        and kill["replica_replaced"]
    )


def main() -> int:
    figures = on_three_nodes(config, scenario)
    print(json.dumps(figures))
    return 0 if whole(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
