"""Per-turn costs of issue 17, in one run: short requests, live-session turns and the fixed CPU of a stream.

    .venv/bin/python -m benchmarks.bench_turns [--litellm] [--requests 640] [--concurrency 64] [--out DIR]

Three scenarios against one Relay (``relay serve`` on a free port, as ``benchmarks.run`` starts it):

- **short**: non-streamed 2-token replies from the fake upstream (TTFT 50 ms), ``--requests`` of them
  ``--concurrency`` at a time, each in a new session; direct, through Relay, and through LiteLLM x1
  (``--litellm``), interleaved in one run: requests/s, latency p50/p99, every text checked.
- **live turns**: 64 sessions on the built-in ``echo`` provider, each made live by one turn, then
  ``--turns`` more turns each, 64 at a time (non-streamed): Relay's CPU per turn, per process group
  (ingress, session actors, proxy, pool, directory), and the directory's ``lookups`` per turn.
- **fixed CPU per stream**: streamed 1-token replies, 16 at a time: CPU per stream across every Relay
  process, less the CPU the same processes use at rest over the same time.

CPU comes from ``/proc`` over ``relay serve``'s process tree (``benchmarks.procfs``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.fake_upstream import reply_text
from benchmarks.loadgen import percentile
from benchmarks.procfs import CpuSample, sample_tree
from benchmarks.run import ROOT, Processes, free_port, log, settle_session_actors, start_litellm

LIVE_SESSIONS = 64
_GROUPS = (  # process title prefix -> the part of Relay it is
    ("ray::ServeReplica:relay:Ingress", "ingress"),
    ("ray::SessionActor", "session actors"),
    ("ray::ProxyActor", "proxy"),
    ("ray::ServeReplica:relay:SessionDirectory", "directory"),
    ("ray::ServeReplica:relay:", "pool"),
    ("ray::ServeController", "controller"),
)


def _group(title: str) -> str:
    return next((name for prefix, name in _GROUPS if title.startswith(prefix)), "ray and driver")


def cpu_seconds(before: CpuSample, after: CpuSample) -> dict[str, float]:
    used: dict[str, float] = {}
    for pid, (title, started, cpu) in after.items():
        earlier = before.get(pid)
        base = earlier[2] if earlier is not None and earlier[1] == started else 0.0
        group = _group(title)
        used[group] = used.get(group, 0.0) + cpu - base
    return used


async def _pace(jobs: list[Callable[[], Awaitable[bool]]], concurrency: int) -> tuple[float, list[float], int]:
    """Run ``jobs`` ``concurrency`` at a time: wall seconds, each job's latency, how many failed."""
    queue = list(reversed(jobs))
    latencies: list[float] = []
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while queue:
            job = queue.pop()
            started = time.perf_counter()
            ok = await job()
            latencies.append(time.perf_counter() - started)
            failed += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, failed


async def short_requests(url: str, model: str, headers: dict[str, str], n: int, concurrency: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as http:

        def job(i: int) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                tag = f"s{i}"
                body = {"model": model, "messages": [{"role": "user", "content": tag}], "max_tokens": 8}
                try:
                    answer = await http.post(url, json=body)
                    text = answer.json()["choices"][0]["message"]["content"]
                except (httpx.HTTPError, KeyError, ValueError):
                    return False
                return answer.status_code == 200 and text == reply_text(tag, 2)

            return call

        wall, latencies, failed = await _pace([job(i) for i in range(n)], concurrency)
    return {
        "requests": n,
        "errors_or_inexact": failed,
        "rps": round(n / wall, 1),
        "p50_ms": round(1000 * (percentile(latencies, 0.5) or 0), 1),
        "p99_ms": round(1000 * (percentile(latencies, 0.99) or 0), 1),
    }


async def live_turns(base: str, turns: int) -> tuple[int, int, float]:
    """Make 64 sessions live, then ``turns`` turns each: (turns, failures, wall seconds) of the measured part."""
    limits = httpx.Limits(max_connections=LIVE_SESSIONS, max_keepalive_connections=LIVE_SESSIONS)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        sessions = [f"bench-turns-{i}" for i in range(LIVE_SESSIONS)]

        def turn(session_id: str, i: int) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                body = {"model": "echo", "messages": [{"role": "user", "content": f"turn {i}"}]}
                answer = await http.post("/v1/chat/completions", json=body, headers={"X-Session-Id": session_id})
                return answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == f"turn {i}"

            return call

        await _pace([turn(s, 0) for s in sessions], LIVE_SESSIONS)
        jobs = [turn(s, i) for i in range(1, turns + 1) for s in sessions]
        wall, _, failed = await _pace(jobs, LIVE_SESSIONS)
    return len(jobs), failed, wall


async def one_token_streams(url: str, model: str, n: int, concurrency: int) -> int:
    async with httpx.AsyncClient(timeout=120) as http:

        def job(i: int) -> Callable[[], Awaitable[bool]]:
            async def call() -> bool:
                body = {"model": model, "stream": True, "messages": [{"role": "user", "content": f"o{i}"}]}
                async with http.stream("POST", url, json=body) as answer:
                    data = b"".join([chunk async for chunk in answer.aiter_bytes()])
                return answer.status_code == 200 and data.rstrip().endswith(b"data: [DONE]")

            return call

        _, _, failed = await _pace([job(i) for i in range(n)], concurrency)
    return failed


def start_upstream(procs: Processes, name: str, tokens: int) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(port), "--tokens", str(tokens)]
    procs.start(name, [*argv, "--ttft-ms", "50", "--rate", "50"])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(name, f"{url}/v1/models", within_s=60)
    return url


def start_relay(procs: Processes, upstreams: dict[str, str]) -> tuple[str, int]:
    port = free_port()
    argv = [str(ROOT / ".venv" / "bin" / "relay"), "serve", "--port", str(port)]
    pid = procs.start("relay", [*argv, "--data-dir", str(procs.workdir / "relay-data")], stop_with=2)
    base = f"http://127.0.0.1:{port}"
    procs.wait_http("relay", f"{base}/healthz", within_s=300)
    for provider_id, upstream in upstreams.items():
        entry = {
            "provider_id": provider_id,
            "provider_type": "openai_compatible",
            "model_name": "fake",
            "base_url": f"{upstream}/v1",
            "api_key": "sk-fake",
            "max_retries": 0,
        }
        httpx.post(f"{base}/api/streaming/providers/register", json=entry, timeout=120).raise_for_status()
    return base, pid


def _per(used: dict[str, float], count: int) -> dict[str, float]:
    return {group: round(1000 * seconds / count, 2) for group, seconds in sorted(used.items(), key=lambda kv: -kv[1])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    with tempfile.TemporaryDirectory(prefix="relay-turns-") as tmp:
        procs = Processes(Path(tmp))
        try:
            short_url = start_upstream(procs, "upstream-2", 2)
            one_url = start_upstream(procs, "upstream-1", 1)
            base, relay_pid = start_relay(procs, {"short": short_url, "one": one_url})
            targets: list[tuple[str, str, str, dict[str, str]]] = [
                ("direct", f"{short_url}/v1/chat/completions", "fake", {}),
                ("relay", f"{base}/v1/chat/completions", "short", {}),
            ]
            if args.litellm:
                litellm = start_litellm(procs, short_url, 1)
                targets.append((litellm.name, litellm.url, litellm.model, litellm.headers))
            for _, url, model, headers in targets:  # warm-up: connections, handles, pooled actors
                asyncio.run(short_requests(url, model, headers, 64, 16))
            settle_session_actors(f"{base}/api/stats", {})
            short: dict[str, Any] = {}
            for round_ in range(args.rounds):
                for name, url, model, headers in targets:
                    log(f"short requests round {round_ + 1}: {name}")
                    row = asyncio.run(short_requests(url, model, headers, args.requests, args.concurrency))
                    short.setdefault(name, []).append(row)
            result["short"] = short

            idle_before = sample_tree(relay_pid)
            time.sleep(10)
            idle = cpu_seconds(idle_before, sample_tree(relay_pid))
            idle_per_s = sum(idle.values()) / 10
            result["idle_cpu_pct"] = round(100 * idle_per_s, 1)

            before = sample_tree(relay_pid)
            lookups_before = httpx.get(f"{base}/api/stats", timeout=30).json()["sessions"]["lookups"]
            turns, failed, wall = asyncio.run(live_turns(base, args.turns))
            used = cpu_seconds(before, sample_tree(relay_pid))
            lookups = httpx.get(f"{base}/api/stats", timeout=30).json()["sessions"]["lookups"] - lookups_before
            result["live_turns"] = {
                "turns": turns,
                "failed": failed,
                "turns_per_s": round(turns / wall, 1),
                "cpu_ms_per_turn": round(1000 * sum(used.values()) / turns, 2),
                "cpu_ms_per_turn_less_idle": round(1000 * (sum(used.values()) - idle_per_s * wall) / turns, 2),
                "by_process_ms": _per(used, turns),
                "directory_lookups_per_turn": round((lookups - LIVE_SESSIONS) / turns, 3),
            }

            streams = args.streams
            asyncio.run(one_token_streams(f"{base}/v1/chat/completions", "one", 32, 16))
            before, started = sample_tree(relay_pid), time.perf_counter()
            failed = asyncio.run(one_token_streams(f"{base}/v1/chat/completions", "one", streams, 16))
            wall = time.perf_counter() - started
            used = cpu_seconds(before, sample_tree(relay_pid))
            result["fixed_cpu_per_stream"] = {
                "streams": streams,
                "failed": failed,
                "cpu_ms_per_stream_less_idle": round(1000 * (sum(used.values()) - idle_per_s * wall) / streams, 2),
                "by_process_ms": _per(used, streams),
            }
        finally:
            procs.stop_all()
    result["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="short-request rounds, targets interleaved")
    parser.add_argument("--turns", type=int, default=5, help="measured turns per live session")
    parser.add_argument("--streams", type=int, default=320, help="1-token streams for the fixed cost")
    parser.add_argument("--litellm", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here too")
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
