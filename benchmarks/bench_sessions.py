"""Session-path costs on the echo provider, measured side by side in one run.

    .venv/bin/python benchmarks/bench_sessions.py [--rounds N] [--cold-rounds N] [--cohost N] [--store postgresql://…]

Starts its own local Ray cluster and Serve app (from config/serve.yaml) and prints:
1. TTFT through Relay against the echo adapter called in-process (the floor);
2. TTFT for an existing live session, a brand-new one (warm pool), a brand-new one with no actor
   to take (cold: the request waits for a process start) and a reactivated one (from the store);
3. the directory's activation call alone for the same three cases;
4. memory: USS of a new actor with no session, of the (blank, recycled) pooled actors, and of the new
   actor hosting 1 and then N live sessions with a stored history each, which gives the marginal
   memory per live session; idle CPU per actor.
"""

from __future__ import annotations

import argparse
import asyncio
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
from ray.serve.handle import DeploymentHandle

from actors.deploy import apply_ray_env, deploy_config
from actors.session_actor import SessionActor
from relay.cli.serve import load_serve_config
from relay.config import ContextSettings, ProviderConfig
from relay.providers import adapter_class
from relay.request import ChatRequest
from relay.store import open_store

ROOT = Path(__file__).resolve().parents[1]
ECHO = {"ttft_ms": 20, "tokens_per_s": 200}
WARM = {"warm_pool_size": 2, "pool_idle_ttl_s": 300.0}
HISTORY_TURNS = 10  # per co-hosted session, each message 40 words
WORDS = " ".join(f"word{k}" for k in range(40))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


async def direct_ttft() -> float:
    config = ProviderConfig(provider_id="echo", provider_type="echo", options=ECHO)
    adapter = adapter_class(config)(config)
    start = time.perf_counter()
    request = ChatRequest(provider="echo", messages=[{"role": "user", "content": "measure this reply"}])
    async for _ in adapter.stream_chat(request):
        return time.perf_counter() - start
    raise AssertionError("no event")


async def relay_ttft(http: httpx.AsyncClient, session_id: str | None) -> tuple[float, str]:
    headers = {"X-Session-Id": session_id} if session_id else {}
    body = {"messages": [{"role": "user", "content": "measure this reply"}], "stream_format": "ndjson"}
    start = time.perf_counter()
    async with http.stream("POST", "/api/streaming/chat", json=body, headers=headers) as response:
        lines = response.aiter_lines()
        await anext(lines)
        ttft = time.perf_counter() - start
        async for _ in lines:
            pass
    return ttft, response.headers["x-session-id"]


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def uss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    private = sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))
    return private / 1024


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / 100  # utime + stime, in clock ticks of 10 ms


async def until(probe: Callable[[], Awaitable[bool]], within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError("the directory did not settle")
        await asyncio.sleep(0.1)


async def no_actor_left(directory: DeploymentHandle) -> None:
    """Passivate everything and let the pool trim to zero: the next new session must start a process."""

    async def empty() -> bool:
        await directory.passivate_idle.remote(0.0)
        stats = await directory.stats.remote()
        return stats["live_actors"] == stats["pooled"] == stats["creating"] == 0

    await until(empty)


async def pool_stocked(directory: DeploymentHandle) -> None:
    async def stocked() -> bool:
        stats = await directory.stats.remote()
        return stats["creating"] == 0 and stats["pooled"] >= stats["warm_pool_size"]

    await until(stocked)


async def activations(
    http: httpx.AsyncClient, directory: DeploymentHandle, existing: str, rounds: int, cold_rounds: int
) -> dict[str, Any]:
    """TTFT and the bare activation call: from the warm pool, cold (no actor at all), and from the store."""
    fresh, fresh_call = [], []
    for _ in range(rounds):
        await pool_stocked(directory)
        fresh.append((await relay_ttft(http, None))[0])
        await directory.passivate_idle.remote(0.0)
        await pool_stocked(directory)
        fresh_call.append(await timed(lambda: directory.activate.remote(None, "bench")))
        await directory.passivate_idle.remote(0.0)
    reactivated, reactivated_call = [], []
    for _ in range(rounds):
        await directory.passivate_idle.remote(0.0)
        reactivated.append((await relay_ttft(http, existing))[0])
        await directory.passivate_idle.remote(0.0)
        reactivated_call.append(await timed(lambda: directory.activate.remote(existing, "anonymous")))
    await directory.tune.remote(warm_pool_size=0, pool_idle_ttl_s=0.01)
    cold, cold_call = [], []
    for _ in range(cold_rounds):
        await no_actor_left(directory)
        cold.append((await relay_ttft(http, None))[0])
        await no_actor_left(directory)
        cold_call.append(await timed(lambda: directory.activate.remote(None, "bench")))
    await directory.tune.remote(**WARM)
    await directory.passivate_idle.remote(0.0)
    await pool_stocked(directory)
    return {
        "fresh": fresh,
        "fresh_call": fresh_call,
        "reactivated": reactivated,
        "reactivated_call": reactivated_call,
        "cold": cold,
        "cold_call": cold_call,
    }


def seed_sessions(store_url: str, count: int) -> list[str]:
    """Sessions with a stored history, as users leave them: HISTORY_TURNS turns of 40-word messages."""
    store = open_store(store_url)
    sids = []
    for _ in range(count):
        sid = store.create_session("bench")["session_id"]
        for turn in range(HISTORY_TURNS):
            for role in ("user", "assistant"):
                store.append_message(sid, {"role": role, "content": f"{turn} {WORDS}"})
        sids.append(sid)
    store.close()
    return sids


async def host_with_a_turn(actor: Any, sid: str) -> None:
    await actor.activate.remote(sid, "bench")
    request = ChatRequest(provider="echo", messages=[{"role": "user", "content": "one more turn"}])
    async for ref in actor.chat.remote(sid, request):
        await ref


async def memory(directory: DeploymentHandle, store_url: str, cohost: int) -> dict[str, Any]:
    """USS of blank pooled actors, and of one actor of the benchmark's own hosting 1, then N live sessions."""
    pooled = [actor for actor in await directory.actors.remote() if not await actor.hosted.remote()]
    blank = [uss_mb(await actor.pid.remote()) for actor in pooled]
    sids = seed_sessions(store_url, cohost)
    actor = SessionActor.remote(store_url, ContextSettings())  # the class the directory runs, kept out of its pool
    pid = await actor.pid.remote()
    try:
        fresh = uss_mb(pid)
        await host_with_a_turn(actor, sids[0])
        one = uss_mb(pid)
        for sid in sids[1:]:
            await host_with_a_turn(actor, sid)
        assert len(await actor.hosted.remote()) == cohost
        many = uss_mb(pid)
    finally:
        ray.kill(actor)
    return {"blank": blank, "fresh": fresh, "one": one, "many": many, "cohost": cohost}


async def idle_cpu(directory: DeploymentHandle) -> float:
    pids = [await actor.pid.remote() for actor in await directory.actors.remote()]
    before = {pid: cpu_seconds(pid) for pid in pids}
    window = 10.0
    await asyncio.sleep(window)  # the measurement itself: idle CPU over a fixed window
    return statistics.mean((cpu_seconds(pid) - before[pid]) / window * 100 for pid in pids)


async def measure(url: str, rounds: int, cold_rounds: int, cohost: int, store_url: str) -> list[tuple[str, str, str]]:
    directory = serve.get_deployment_handle("SessionDirectory", app_name="relay")
    direct = [await direct_ttft() for _ in range(rounds)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await relay_ttft(http, None)  # warm-up
        _, existing = await relay_ttft(http, None)
        live = [(await relay_ttft(http, existing))[0] for _ in range(rounds)]
        act = await activations(http, directory, existing, rounds, cold_rounds)
    mem = await memory(directory, store_url, cohost)
    cpu = await idle_cpu(directory)
    stats = await directory.stats.remote()
    per_session_kb = (mem["many"] - mem["one"]) * 1024 / (cohost - 1)
    floor = p50(direct)
    return [
        ("TTFT p50, echo in-process (floor)", f"{floor} ms", "echo ttft_ms=20"),
        ("TTFT p50, existing live session", f"{p50(live)} ms", f"+{p50(live) - floor:.1f} ms over floor"),
        (
            "TTFT p50, brand-new session, warm pool",
            f"{p50(act['fresh'])} ms",
            f"{p50(act['fresh']) - p50(live):+.1f} ms vs live",
        ),
        (
            "TTFT p50, brand-new session, cold (no actor up)",
            f"{p50(act['cold'])} ms",
            f"{p50(act['cold']) - p50(live):+.1f} ms vs live; {len(act['cold'])} rounds",
        ),
        (
            "TTFT p50, reactivated session (from the store)",
            f"{p50(act['reactivated'])} ms",
            f"{p50(act['reactivated']) - p50(live):+.1f} ms vs live",
        ),
        ("activation call p50, new session, warm pool", f"{p50(act['fresh_call'])} ms", "directory.activate alone"),
        ("activation call p50, new session, cold", f"{p50(act['cold_call'])} ms", "includes the process start"),
        ("activation call p50, reactivation", f"{p50(act['reactivated_call'])} ms", "history loaded from the store"),
        ("USS, new actor, no session yet", f"{mem['fresh']:.1f} MB", "a process as the directory starts one"),
        (
            "USS, pooled actor (mean)",
            f"{statistics.mean(mem['blank']):.1f} MB",
            f"{len(mem['blank'])} actors, blank but recycled: they hosted the rounds above",
        ),
        ("USS, the new actor hosting 1 live session", f"{mem['one']:.1f} MB", "after one turn"),
        (f"USS, same actor hosting {cohost} live sessions", f"{mem['many']:.1f} MB", "one turn each"),
        (
            "marginal USS per live session",
            f"{per_session_kb:.0f} KB",
            f"({cohost} - 1 sessions) / {cohost - 1}; {HISTORY_TURNS} stored turns of 40 words each",
        ),
        ("idle CPU per session actor (mean)", f"{cpu:.2f} % of a core", "over 10 s"),
        ("actor cap with these defaults", f"{stats['max_actors']}", "2 per core, at least 4: 4 on 2 cores, 32 on 16"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cold-rounds", type=int, default=5, help="each starts a process (~1 s of CPU)")
    parser.add_argument("--cohost", type=int, default=50, help="live sessions on one actor for the memory figure")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir), e.g. postgresql://…")
    args = parser.parse_args()
    port = args.port or free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=Path(data_dir))
        app_args: dict[str, Any] = config["applications"][0]["args"]
        app_args["providers"] = [{"provider_id": "echo", "provider_type": "echo", "model": "echo", "options": ECHO}]
        app_args["sessions"] = {**WARM, "idle_ttl_s": 3600}
        if args.store:
            app_args["store_url"] = args.store
        apply_ray_env()  # the cluster runs Serve as `relay serve` runs it
        ray.init(namespace="serve", include_dashboard=False, log_to_driver=False)
        try:
            deploy_config(config)
            url = f"http://127.0.0.1:{port}"
            rows = asyncio.run(measure(url, args.rounds, args.cold_rounds, max(2, args.cohost), app_args["store_url"]))
        finally:
            serve.shutdown()
            ray.shutdown()
    print("| measure | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
