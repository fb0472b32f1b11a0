"""Session-path costs on the echo provider, measured side by side in one run.

    .venv/bin/python benchmarks/bench_sessions.py [--rounds N] [--store postgresql://…]

Starts its own local Ray cluster and Serve app (from config/serve.yaml) and prints:
1. TTFT through Relay against the echo adapter called in-process (the floor);
2. TTFT for a brand-new session against an existing, live one;
3. TTFT after passivation (reactivation from the store);
4. memory (USS) and idle CPU per live session actor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

from actors.deploy import deploy_config
from relay.cli import load_serve_config
from relay.config import ProviderConfig
from relay.providers import create_adapter
from relay.request import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
PORT = 8765
ECHO = {"ttft_ms": 20, "tokens_per_s": 200}


def p50(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


async def direct_ttft() -> float:
    adapter = create_adapter(ProviderConfig(provider_id="echo", provider_type="echo", options=ECHO))
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


def uss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    private = sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))
    return private / 1024


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / 100  # utime + stime, in clock ticks of 10 ms


async def measure(rounds: int) -> list[tuple[str, str, str]]:
    directory = serve.get_deployment_handle("SessionDirectory", app_name="relay")
    direct = [await direct_ttft() for _ in range(rounds)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as http:
        await relay_ttft(http, None)  # warm-up
        _, existing = await relay_ttft(http, None)
        live = [(await relay_ttft(http, existing))[0] for _ in range(rounds)]
        fresh = []
        for _ in range(rounds):
            fresh.append((await relay_ttft(http, None))[0])
            await directory.passivate_idle.remote(0.0)  # keep the warm pool stocked, as at steady state
        reactivated = []
        for _ in range(rounds):
            await directory.passivate_idle.remote(0.0)
            reactivated.append((await relay_ttft(http, existing))[0])
    pids = [await actor.pid.remote() for actor in await directory.actors.remote()]
    uss = [uss_mb(pid) for pid in pids]
    before = {pid: cpu_seconds(pid) for pid in pids}
    window = 10.0
    await asyncio.sleep(window)  # the measurement itself: idle CPU over a fixed window
    idle = [(cpu_seconds(pid) - before[pid]) / window * 100 for pid in pids]
    stats = await directory.stats.remote()
    return [
        ("TTFT p50, echo in-process (floor)", f"{p50(direct)} ms", "echo ttft_ms=20"),
        ("TTFT p50, Relay, existing live session", f"{p50(live)} ms", f"+{p50(live) - p50(direct):.1f} ms over floor"),
        ("TTFT p50, Relay, brand-new session", f"{p50(fresh)} ms", f"{p50(fresh) - p50(live):+.1f} ms vs existing"),
        (
            "TTFT p50, Relay, reactivated session",
            f"{p50(reactivated)} ms",
            f"{p50(reactivated) - p50(live):+.1f} ms vs live",
        ),
        ("USS per session actor (mean)", f"{statistics.mean(uss):.1f} MB", f"{len(pids)} actors sampled"),
        ("idle CPU per session actor (mean)", f"{statistics.mean(idle):.2f} % of a core", f"over {window:.0f} s"),
        ("actor cap with these defaults", f"{stats['max_actors']}", "8 per core: 16 on 2 cores, 128 on 16"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir), e.g. postgresql://…")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=PORT, data_dir=Path(data_dir))
        app_args: dict[str, Any] = config["applications"][0]["args"]
        app_args["providers"] = [{"provider_id": "echo", "provider_type": "echo", "model": "echo", "options": ECHO}]
        app_args["sessions"] = {"warm_pool_size": 2, "idle_ttl_s": 3600}
        if args.store:
            app_args["store_url"] = args.store
        ray.init(namespace="serve", include_dashboard=False, log_to_driver=False)
        try:
            deploy_config(config)
            rows = asyncio.run(measure(args.rounds))
        finally:
            serve.shutdown()
            ray.shutdown()
    print("| measure | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
