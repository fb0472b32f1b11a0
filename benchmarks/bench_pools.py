"""Provider pools: what registered providers cost, shared against dedicated, side by side in one run.

    .venv/bin/python benchmarks/bench_pools.py [--providers 20] [--idle-s 20] [--rest-only] [--code DIR]

``--code DIR`` serves another checkout's code with this venv (e.g. ``git archive <commit> | tar -x -C DIR``),
to measure ``relay serve`` at rest before a change.

Starts ``relay serve`` (config/serve.yaml: echo only) in a session of its own, and a
fake OpenAI upstream in this process, then prints:
1. ``relay serve`` at rest: processes, RSS and idle CPU of its whole tree, per process;
2. N providers registered into the shared pool: registration p50/p99, processes and
   RSS added, idle CPU of the tree after against before, and whether every provider
   streams its upstream's exact text;
3. the same N registered with ``dedicated: true`` (one deployment each, as every
   provider was before shared pools): the same figures, and how many Ray could place
   before registration answered 503.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from procfs import cpu_percent, sample_titled, session_pids  # noqa: E402

from tests.fakes.openai_upstream import FakeOpenAI, ServerThread, free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _name(pid: int, title: str) -> str:
    """A Python process by the script it runs (dashboard.py, monitor.py, log_monitor.py, relay), else its title."""
    if title != "python":
        return title
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return title
    script = next((arg for arg in argv[1:] if arg and not arg.startswith("-")), "")
    return f"python {Path(script).name}"


def tree(sid: int) -> dict[int, tuple[str, int, float]]:
    """The server's processes as a procfs CpuSample."""
    pids = set(session_pids(sid))
    sample = sample_titled("")
    return {pid: (_name(pid, title), started, cpu) for pid, (title, started, cpu) in sample.items() if pid in pids}


def footprint(sid: int, idle_s: float) -> dict[str, Any]:
    before = tree(sid)
    start = time.monotonic()
    time.sleep(idle_s)
    after = tree(sid)
    per_title = cpu_percent(before, after, time.monotonic() - start)
    rss: dict[str, float] = {}
    count: dict[str, int] = {}
    for pid, (title, _, _) in after.items():
        rss[title] = rss.get(title, 0.0) + rss_mb(pid)
        count[title] = count.get(title, 0) + 1
    return {
        "processes": len(after),
        "rss_mb": round(sum(rss.values())),
        "idle_cpu_pct": round(sum(per_title.values()), 1),
        "by_title": {t: (count[t], round(rss[t]), per_title.get(t, 0.0)) for t in sorted(rss, key=lambda t: -rss[t])},
    }


def start_server(data_dir: Path, port: int, code: Path) -> subprocess.Popen[bytes]:
    log = (data_dir / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/relay"), "serve", "--port", str(port), "--data-dir", str(data_dir / "data")],
        cwd=code,
        env=os.environ | {"PYTHONPATH": str(code)},  # Ray's workers inherit it: they import this code too
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"relay serve did not become ready; see {data_dir / 'serve.log'}")


def register_all(
    http: httpx.Client, upstream: str, count: int, prefix: str, session: dict[str, str], **extra: Any
) -> dict[str, Any]:
    seconds, refused, placed = [], [], []
    for i in range(count):
        provider_id = f"{prefix}-{i}"
        body = {
            "provider_id": provider_id,
            "provider_type": "openai_compatible",
            "model_name": "fake",
            "base_url": upstream,
            "max_retries": 0,
            **extra,
        }
        start = time.perf_counter()
        response = http.post("/api/streaming/providers/register", json=body)
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        if response.status_code == 201:
            placed.append(provider_id)
        else:
            refused.append((provider_id, response.status_code, round(elapsed, 1), response.text[:160]))
    exact = all(
        _text(http, provider_id, session) == f"from {provider_id} " for provider_id in placed  # a space per word
    )
    ordered = sorted(seconds)
    return {
        "placed": placed,
        "refused": refused,
        "p50_ms": round(statistics.median(ordered) * 1000),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000),
        "exact_text": exact,
    }


def _text(http: httpx.Client, provider_id: str, session: dict[str, str]) -> str:
    body = {"model": provider_id, "stream": True, "messages": [{"role": "user", "content": f"from {provider_id}"}]}
    text = []
    with http.stream("POST", "/v1/chat/completions", json=body, headers=session) as response:
        session["X-Session-Id"] = response.headers["x-session-id"]
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choices = orjson.loads(line[6:])["choices"]
                text.append((choices[0]["delta"].get("content") or "") if choices else "")
    return "".join(text)


def delete_all(http: httpx.Client, provider_ids: list[str]) -> None:
    for provider_id in provider_ids:
        http.delete(f"/api/streaming/providers/{provider_id}")


def row(name: str, base: dict[str, Any], now: dict[str, Any], reg: dict[str, Any] | None) -> str:
    cells = [
        name,
        f"{reg['p50_ms']} / {reg['p99_ms']}" if reg else "-",
        str(len(reg["placed"])) if reg else "-",
        f"{now['processes'] - base['processes']:+d}",
        f"{now['rss_mb'] - base['rss_mb']:+d}",
        f"{now['idle_cpu_pct']} ({now['idle_cpu_pct'] / max(base['idle_cpu_pct'], 0.1):.2f}x)",
        str(reg["exact_text"]) if reg else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=20)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--rest-only", action="store_true", help="only relay serve at rest, no registrations")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code relay serve runs")
    args = parser.parse_args()
    os.environ.setdefault("RELAY_LOG_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory() as tmp, ServerThread(FakeOpenAI().app) as upstream:
        port = free_port()
        server = start_server(Path(tmp), port, args.code.resolve())
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=180) as http:
                # One session for every turn, opened before the baseline: activating it takes an actor from the
                # warm pool and the directory starts another, a process that is the session's, not the pools'.
                session: dict[str, str] = {}
                assert _text(http, "echo", session) == "from echo"
                rest = footprint(server.pid, args.idle_s)
                print(f"relay serve at rest (echo only): {rest['processes']} processes, {rest['rss_mb']} MB RSS, "
                      f"{rest['idle_cpu_pct']} % of a core idle")
                print("| process | count | RSS MB | idle CPU % |\n|---|---|---|---|")
                for title, (count, mb, cpu) in rest["by_title"].items():
                    print(f"| {title} | {count} | {mb} | {cpu} |")
                if args.rest_only:
                    return
                shared = register_all(http, upstream.url + "/v1", args.providers, "shared", session)
                after_shared = footprint(server.pid, args.idle_s)
                delete_all(http, shared["placed"])
                dedicated = register_all(http, upstream.url + "/v1", args.providers, "own", session, dedicated=True)
                after_dedicated = footprint(server.pid, args.idle_s)
                delete_all(http, dedicated["placed"])
            print(f"\n{args.providers} providers registered against the same Relay, one run:")
            print("| pools | registration p50 / p99 ms | placed | processes added | RSS added MB | idle CPU % "
                  "(x before) | every provider's exact text |")
            print("|---|---|---|---|---|---|---|")
            print(row("before any (echo only)", rest, rest, None))
            print(row("shared", rest, after_shared, shared))
            print(row("dedicated", rest, after_dedicated, dedicated))
            for provider_id, status, seconds, text in dedicated["refused"][:3]:
                print(f"refused {provider_id}: {status} after {seconds} s: {text}")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
