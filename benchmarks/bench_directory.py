"""Activations/s of the session directory with 1, 2 and 4 partitions, and the directory's CPU per activation.

    .venv/bin/python -m benchmarks.bench_directory [--partitions 1,2,4] [--sessions 1500] [--concurrency 64]
        [--http] [--store postgresql://…]

Starts its own local Ray cluster. For each partition count it deploys Relay afresh (config/serve.yaml, the echo
provider, ``sessions.directory_partitions`` = N) and activates brand-new sessions as fast as it can: C callers,
each minting an id and calling the ``activate`` of the partition that owns it, as the ingress does for a new
session (the benchmark stands in for any number of ingress replicas; the chat that follows is left out). With
``--http`` it also creates new sessions through the one ingress (``POST /api/streaming/chat`` without a session
id, a one-word echo reply): what a client sees, the chat included.

Prints, per N: activations/s, the activation call's p50/p99, the CPU of the partitions, of the session actors
and of the whole cluster in % of a core, and the partitions' CPU per activation (what bounds one partition: a
partition on a core of its own does 1000 / that many activations/s). The machine's load average is printed
before and after: on 2 cores the partitions share the same cores, so activations/s there does not grow with N;
the CPU per activation is the figure that carries to a larger cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from actors.deploy import apply_ray_env, deploy_config
from actors.partitions import DirectoryPartitions, mint_session_id
from benchmarks.procfs import CpuSample, sample_tree
from relay.cli.serve import load_serve_config

ROOT = Path(__file__).resolve().parents[1]
DIRECTORY_TITLE = "ray::ServeReplica:relay:SessionDirectory"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(data_dir: Path, port: int, partitions: int, store: str | None) -> dict[str, Any]:
    serve_config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=data_dir)
    args = serve_config["applications"][0]["args"]
    args["providers"] = [{"provider_id": "echo", "provider_type": "echo", "model": "echo"}]
    # Every session stays live: the run measures activation, not the LRU passivation a cap would add.
    args["sessions"] = {"warm_pool_size": 2, "idle_ttl_s": 3600, "max_live_sessions": 1_000_000}
    args["sessions"]["directory_partitions"] = partitions
    if store:
        args["store_url"] = store
    return serve_config


def cpu_by_part(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds between the samples: the partitions, the session actors, and every process of the cluster."""
    used = {"directory": 0.0, "actors": 0.0, "cluster": 0.0}
    for pid, (title, started, cpu) in after.items():
        earlier = before.get(pid)
        spent = cpu - (earlier[2] if earlier is not None and earlier[1] == started else 0.0)
        used["cluster"] += spent
        if title.startswith(DIRECTORY_TITLE):
            used["directory"] += spent
        elif title.startswith("ray::SessionActor"):
            used["actors"] += spent
    return used


async def drive(count: int, concurrency: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    """``count`` calls from ``concurrency`` callers; each call's latency."""
    latencies: list[float] = []
    remaining = count

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def measure(
    directory: DirectoryPartitions, url: str, sessions: int, concurrency: int, http_too: bool
) -> dict[str, Any]:
    async def activate() -> None:
        sid = mint_session_id()
        await directory.owner(sid).activate.remote(sid, "bench", True)

    await drive(50, 8, activate)  # warm-up: handles, routers, the first actors
    root = os.getpid()
    before, started = sample_tree(root), time.perf_counter()
    latencies = await drive(sessions, concurrency, activate)
    wall = time.perf_counter() - started
    cpu = cpu_by_part(before, sample_tree(root))
    stats = await directory.stats()
    figures: dict[str, Any] = {
        "activations_per_s": round(sessions / wall, 1),
        "call_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "call_p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        "directory_cpu_pct": round(100 * cpu["directory"] / wall, 1),
        "actors_cpu_pct": round(100 * cpu["actors"] / wall, 1),
        "cluster_cpu_pct": round(100 * cpu["cluster"] / wall, 1),
        "directory_cpu_ms_per_activation": round(1000 * cpu["directory"] / sessions, 2),
        "actors": stats["live_actors"] + stats["pooled"],
        "live": stats["live"],
    }
    if http_too:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:

            async def new_session() -> None:
                body = {"stream_format": "json", "messages": [{"role": "user", "content": "hi"}]}
                response = await http.post("/api/streaming/chat", json=body, headers={"X-User-Id": "bench"})
                response.raise_for_status()

            await drive(20, 4, new_session)
            started = time.perf_counter()
            await drive(sessions // 3, concurrency, new_session)
            figures["http_new_sessions_per_s"] = round(sessions // 3 / (time.perf_counter() - started), 1)
    return figures


async def run_one(url: str, partitions: int, sessions: int, concurrency: int, http_too: bool) -> dict[str, Any]:
    try:
        return await measure(DirectoryPartitions.of_app("relay", partitions), url, sessions, concurrency, http_too)
    finally:
        await serve.shutdown_async()  # Serve's throughput mode: its routers live on this loop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", default="1,2,4")
    parser.add_argument("--sessions", type=int, default=1500, help="activations measured per partition count")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--http", action="store_true", help="also new sessions through the ingress, chat included")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir), e.g. postgresql://…")
    args = parser.parse_args()
    apply_ray_env()
    ray.init(namespace="serve", include_dashboard=False, log_to_driver=False)
    rows = []
    load_before = os.getloadavg()
    try:
        for partitions in (int(n) for n in args.partitions.split(",")):
            with tempfile.TemporaryDirectory() as data_dir:
                port = free_port()
                deploy_config(config(Path(data_dir), port, partitions, args.store))
                url = f"http://127.0.0.1:{port}"
                figures = asyncio.run(run_one(url, partitions, args.sessions, args.concurrency, args.http))
                rows.append((partitions, figures))
                print(partitions, figures, flush=True)
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    keys = list(rows[0][1])
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f}; {os.cpu_count()} cores")
    print("| partitions | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for partitions, figures in rows:
        print(f"| {partitions} | " + " | ".join(str(figures[key]) for key in keys) + " |")


if __name__ == "__main__":
    main()
