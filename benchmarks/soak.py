"""Soak: moderate mixed load for a while, and the memory of every Relay process at the start and the end.

    .venv/bin/python -m benchmarks.soak --minutes 30 [--url http://127.0.0.1:8123 | --start] [--out soak.json]

``--start`` runs ``relay serve --port 8123`` from this checkout's venv (a fresh
data directory, echo provider) and stops it afterwards. It serves
config/serve.yaml with auth required and generous per-user limits, so that the
auth middleware and the limiter actor carry every request (``--plain``: the file
as it is). Otherwise point ``--url`` at a running server and name its ``relay
serve`` pid with ``--pid`` so that its process tree can be measured.

The load, on the echo provider (paced, so streams stay open a while):
- HTTP workers loop over streamed chats in a few sessions each (a session is
  retired after ``--turns-per-session`` turns, as users start new chats),
  non-streamed OpenAI completions (each a new session), and cancels (a
  stream closed after its first events: the run is stopped and stored);
- WebSocket workers keep one connection each, send ``chat_request`` after
  ``chat_request``, ``cancel`` one in five, and reconnect every 20.

Memory is RSS and private memory (``Private_*`` of ``/proc/PID/smaps_rollup``,
what the process alone holds) per process of the server's tree, grouped by
Ray's process title. The start sample is taken after ``--warmup-s``, once
every kind of process has been started; one sample per ``--sample-s`` is
kept, so a plateau can be told from a steady climb.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
import yaml

from benchmarks.procfs import sample_tree
from relay.http.auth import new_key
from relay.store import open_store

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "keeps", "running", "through", "field"]


def memory(pid: int) -> tuple[int, int] | None:
    """(RSS, private) in KiB; None once the process is gone."""
    try:
        rollup = (Path("/proc") / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.endswith("kB")}
    return fields.get("Rss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def snapshot(root: int) -> dict[int, dict[str, Any]]:
    processes = {}
    for pid, (title, _, _) in sample_tree(root).items():
        sizes = memory(pid)
        if sizes is not None:
            processes[pid] = {"title": title, "rss_kib": sizes[0], "private_kib": sizes[1]}
    return processes


def by_title(processes: dict[int, dict[str, Any]]) -> dict[str, dict[str, int]]:
    groups: dict[str, dict[str, int]] = {}
    for process in processes.values():
        group = groups.setdefault(process["title"], {"processes": 0, "rss_kib": 0, "private_kib": 0})
        group["processes"] += 1
        group["rss_kib"] += process["rss_kib"]
        group["private_kib"] += process["private_kib"]
    return groups


class Load:
    def __init__(
        self, url: str, headers: dict[str, str], user: str | None, tokens_per_s: float, turns_per_session: int
    ) -> None:
        self.url = url
        self.headers = headers
        self.user = user
        self.options = {"tokens_per_s": tokens_per_s}
        self.turns_per_session = turns_per_session
        self.done: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.ttft: list[float] = []
        self.stop = asyncio.Event()

    def count(self, kind: str, ok: bool = True) -> None:
        table = self.done if ok else self.errors
        table[kind] = table.get(kind, 0) + 1

    @staticmethod
    def text(rng: random.Random) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))

    async def http_worker(self, worker: int) -> None:
        rng = random.Random(worker)
        sessions = [f"soak-{worker}-{n}" for n in range(3)]
        turns = dict.fromkeys(sessions, 0)
        generation = 0
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=120) as http:
            while not self.stop.is_set():
                roll = rng.random()
                try:
                    if roll < 0.6:
                        session = rng.choice(sessions)
                        await self.chat(http, session, rng)
                        turns[session] += 1
                        if turns[session] >= self.turns_per_session:  # the user starts a new chat
                            generation += 1
                            fresh = f"soak-{worker}-{generation + 2}"
                            sessions[sessions.index(session)] = fresh
                            turns[fresh] = 0
                    elif roll < 0.8:
                        body = {"model": "echo", "messages": [{"role": "user", "content": self.text(rng)}]}
                        response = await http.post("/v1/chat/completions", json=body)
                        self.count("completion", response.status_code == 200)
                    else:
                        await self.cancel(http, rng)
                except (httpx.HTTPError, OSError):
                    self.count("http", ok=False)
                    await asyncio.sleep(1.0)

    async def chat(self, http: httpx.AsyncClient, session: str, rng: random.Random) -> None:
        body = {
            "provider_id": "echo",
            "session_id": session,
            "messages": [{"role": "user", "content": self.text(rng)}],
            "provider_options": self.options,
        }
        started = time.perf_counter()
        first = True
        async with http.stream("POST", "/api/streaming/chat", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                self.count("chat", ok=False)
                return
            async for line in response.aiter_lines():
                if first and line.startswith("data:"):
                    self.ttft.append(time.perf_counter() - started)
                    first = False
        self.count("chat")

    async def cancel(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        body = {
            "provider_id": "echo",
            "messages": [{"role": "user", "content": " ".join(WORDS * 3)}],
            "provider_options": self.options,
        }
        async with http.stream("POST", "/api/streaming/chat", json=body) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data:")
                if seen >= rng.randint(1, 4):
                    break  # closing the stream cancels the run
        self.count("cancel", response.status_code == 200)

    async def ws_worker(self, worker: int) -> None:
        rng = random.Random(1000 + worker)
        # With a key the path must name the key's user; without one each worker is a user of its own.
        user = self.user or f"soak-ws-{worker}"
        base = self.url.replace("http://", "ws://") + f"/api/streaming/ws/{user}"
        query = f"?api_key={self.headers['Authorization'][7:]}" if "Authorization" in self.headers else ""
        while not self.stop.is_set():
            try:
                async with websockets.connect(base + query, max_size=None) as ws:
                    for n in range(20):
                        if self.stop.is_set():
                            return
                        await self.ws_turn(ws, f"r{n}", cancel=rng.random() < 0.2, rng=rng)
            except (websockets.WebSocketException, OSError):
                self.count("websocket", ok=False)
                await asyncio.sleep(1.0)  # never a tight loop of failing handshakes

    async def ws_turn(self, ws: Any, request_id: str, *, cancel: bool, rng: random.Random) -> None:
        data = {
            "messages": [{"role": "user", "content": self.text(rng)}],
            "options": {"provider_options": self.options},
        }
        await ws.send(orjson.dumps({"message_type": "chat_request", "request_id": request_id, "data": data}).decode())
        cancelled = False
        async for raw in ws:
            message = orjson.loads(raw)
            if message["request_id"] != request_id:
                continue
            if message["message_type"] == "error":
                self.count("ws_chat", ok=False)
                return
            event = message["data"].get("event_type")
            if cancel and not cancelled and event == "text-delta":
                await ws.send(orjson.dumps({"message_type": "cancel", "request_id": request_id}).decode())
                cancelled = True
            if event == "finish":
                self.count("ws_cancel" if cancelled else "ws_chat")
                return


def secure_config(data_dir: Path) -> tuple[Path, str]:
    """config/serve.yaml with auth required and generous per-user limits (so the limiter actor works), and a key."""
    config = yaml.safe_load((ROOT / "config" / "serve.yaml").read_text())
    args = config["applications"][0]["args"]
    args["auth"] = "required"
    args["limits"] = {"requests_per_min": 100_000, "tokens_per_min": 100_000_000, "concurrent_streams": 100}
    path = data_dir / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    store = open_store(f"sqlite:///{data_dir / 'relay.db'}")
    key, digest, prefix = new_key()
    store.create_api_key("soak", digest, prefix)
    store.close()
    return path, key


def start_server(port: int, data_dir: Path, config: Path) -> subprocess.Popen[bytes]:
    log = (data_dir / "serve.log").open("wb")
    relay = str(ROOT / ".venv" / "bin" / "relay")
    return subprocess.Popen(
        [relay, "serve", "--port", str(port), "--data-dir", str(data_dir), "--config", str(config)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(url: str, deadline_s: float = 300.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        time.sleep(1.0)
    raise RuntimeError(f"{url} did not become ready in {deadline_s:.0f} s")


async def soak(args: argparse.Namespace, root: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    load = Load(args.url, headers, args.user, args.tokens_per_s, args.turns_per_session)
    workers = [asyncio.create_task(load.http_worker(n)) for n in range(args.http)]
    workers += [asyncio.create_task(load.ws_worker(n)) for n in range(args.ws)]
    began = time.monotonic()
    await asyncio.sleep(args.warmup_s)
    samples = [{"t_s": round(time.monotonic() - began), "processes": snapshot(root)}]
    end = began + args.warmup_s + args.minutes * 60
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(min(args.sample_s, left))
        samples.append({"t_s": round(time.monotonic() - began), "processes": snapshot(root)})
        done = sum(load.done.values())
        print(f"t={samples[-1]['t_s']:>5} s  done {done}  errors {sum(load.errors.values())}", flush=True)
    load.stop.set()
    await asyncio.wait(workers, timeout=120)
    for worker in workers:
        worker.cancel()
    return {
        "minutes": args.minutes,
        "warmup_s": args.warmup_s,
        "workers": {"http": args.http, "websocket": args.ws},
        "tokens_per_s": args.tokens_per_s,
        "done": load.done,
        "errors": load.errors,
        "ttft_ms": {
            "p50": round(statistics.median(load.ttft) * 1000, 1) if load.ttft else None,
            "p99": round(statistics.quantiles(load.ttft, n=100)[98] * 1000, 1) if len(load.ttft) > 100 else None,
        },
        "samples": samples,
    }


def report(result: dict[str, Any]) -> None:
    first, last = result["samples"][0], result["samples"][-1]
    start, end = by_title(first["processes"]), by_title(last["processes"])
    span = (last["t_s"] - first["t_s"]) / 60
    print(f"\nsoak: {span:.1f} min measured after a {result['warmup_s']} s warm-up; done {result['done']}")
    ttft = result["ttft_ms"]
    print(f"errors {result['errors'] or 'none'}; chat TTFT p50 {ttft['p50']} ms, p99 {ttft['p99']} ms")
    print(f"{'process':<40} {'n':>5} {'RSS MiB':>17} {'private MiB':>17} {'growth':>9}")
    for title in sorted(set(start) | set(end)):
        a = start.get(title, {"processes": 0, "rss_kib": 0, "private_kib": 0})
        b = end.get(title, {"processes": 0, "rss_kib": 0, "private_kib": 0})
        growth = (b["private_kib"] - a["private_kib"]) / 1024
        print(
            f"{title[:40]:<40} {a['processes']:>2}>{b['processes']:<2} "
            f"{a['rss_kib'] / 1024:>7.1f} > {b['rss_kib'] / 1024:<7.1f} "
            f"{a['private_kib'] / 1024:>7.1f} > {b['private_kib'] / 1024:<7.1f} {growth:>+8.1f}"
        )
    stable = [pid for pid in first["processes"] if pid in last["processes"]]
    print("\nprocesses alive from start to end (same pid), private MiB over time:")
    for pid in sorted(stable, key=lambda p: first["processes"][p]["title"]):
        series = [s["processes"][pid]["private_kib"] / 1024 for s in result["samples"] if pid in s["processes"]]
        trend = " ".join(f"{value:.0f}" for value in series)
        print(f"{first['processes'][pid]['title'][:40]:<40} pid {pid:<7} {trend}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8123")
    parser.add_argument("--start", action="store_true", help="start `relay serve --port 8123` here, stop it after")
    parser.add_argument("--pid", type=int, default=None, help="the running `relay serve`'s pid (without --start)")
    parser.add_argument("--api-key", default=os.environ.get("RELAY_API_KEY"))
    parser.add_argument("--user", default=None, help="the API key's user (the WebSocket path names it)")
    parser.add_argument("--plain", action="store_true", help="with --start: config/serve.yaml as is (no auth, limits)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--http", type=int, default=4, help="HTTP workers")
    parser.add_argument("--ws", type=int, default=2, help="WebSocket workers")
    parser.add_argument("--tokens-per-s", type=float, default=40.0, help="echo pacing")
    parser.add_argument("--turns-per-session", type=int, default=10)
    parser.add_argument("--out", default=None, help="write every sample as JSON here")
    args = parser.parse_args()
    server = None
    if args.start:
        port = int(args.url.rsplit(":", 1)[1])
        data_dir = Path(tempfile.mkdtemp(prefix="relay-soak-"))
        config = ROOT / "config" / "serve.yaml"
        if not args.plain:
            config, args.api_key = secure_config(data_dir)
            args.user = "soak"
        server = start_server(port, data_dir, config)
        root = server.pid
    elif args.pid is not None:
        root = args.pid
    else:
        parser.error("name the server's pid with --pid, or use --start")
    try:
        wait_ready(args.url)
        result = asyncio.run(soak(args, root))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=120)
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
