"""Throughput against the fake upstream direct, through Relay and through LiteLLM, in one run.

    .venv/bin/python -m benchmarks.run [--concurrency 1,32,128] [--rounds 3] [--litellm [--litellm-workers 1,2]]
    .venv/bin/python -m benchmarks.run --ingress python,haproxy [--tokens 1]   # Serve's two ingresses side by side
    .venv/bin/python -m benchmarks.run --configs config/serve.yaml,/tmp/wide.yaml   # two Serve configs side by side

Starts the fake upstream (``benchmarks.fake_upstream``) and Relay (``.venv/bin/relay serve`` on a
free port with a temporary data dir, unless ``--relay-url`` names a running one; with ``--ingress``
one per Serve ingress, each with an admin key; with ``--configs`` one per Serve config file), registers the
upstream in Relay as provider ``bench`` (POST /api/streaming/providers/register), and with
``--litellm`` a pinned LiteLLM proxy from its own venv (``benchmarks/.venv-litellm``, created on
first use). After a warm-up it measures every target at every concurrency, interleaved so that a
change in the machine's load hits them alike, and writes ``throughput.md``, ``throughput.json``
and ``throughput.png`` (with the ``bench`` extra) under ``--out``. CPU is sampled from ``/proc``
for each target's process tree, and apart for Relay's session actors (``ray::SessionActor``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.fake_upstream import reply_text
from benchmarks.loadgen import run_load
from benchmarks.procfs import CpuSample, cpu_percent, sample_titled, sample_tree, session_pids
from benchmarks.report import markdown_table, write_chart, write_json

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
LITELLM_PIN = "litellm[proxy]==1.101.0"  # the peer harness's pin (../shared/bench/compare.sh)
LITELLM_VENV = ROOT / "benchmarks" / ".venv-litellm"
LITELLM_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
ACTOR_TITLE = "ray::SessionActor"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """One thing to measure: where to send streams, and whose CPU to count."""

    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    cpu_root: int | None = None  # the gateway's process tree
    actors: Callable[[], CpuSample] | None = None  # Relay's session actors
    stats_url: str | None = None  # Relay's /api/stats: the warm-up waits for its session directory
    wire: str = "chat"  # "responses": the same streams through /v1/responses


class Processes:
    """Child processes, each in its own session so that stopping one can stop everything it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen[bytes], signal.Signals]] = []

    def start(self, name: str, argv: list[str], *, stop_with: signal.Signals = signal.SIGTERM, **env: str) -> int:
        logfile = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=logfile, stderr=subprocess.STDOUT, env=os.environ | env, start_new_session=True
        )
        logfile.close()
        self.running.append((name, process, stop_with))
        return process.pid

    def wait_http(self, name: str, url: str, within_s: float) -> None:
        """Until ``url`` answers 200; fails at once, with the log's tail, if the process died."""
        process = next(p for n, p, _ in self.running if n == name)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code == 200 and process.poll() is None:
                    return  # (a 200 while it is dead would come from whoever took the port since)
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer {url} within {within_s:.0f} s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def exited(self) -> list[str]:
        return [name for name, process, _ in self.running if process.poll() is not None]

    def stop_all(self) -> None:
        for name, process, stop_with in reversed(self.running):
            if process.poll() is None:
                process.send_signal(stop_with)
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop within 90 s: killing it and its session")
                    process.kill()
            process.wait()
            # Whatever it left in its session (Ray workers, uvicorn workers) goes with it.
            for pid in session_pids(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.running.clear()


def start_relay(
    procs: Processes,
    upstream_url: str,
    args: argparse.Namespace,
    ingress: str | None = None,
    config: Path | None = None,
) -> Target:
    """Relay as a target; with ``ingress`` (``--ingress``), one ``relay serve --ingress INGRESS`` of its own; with
    ``config`` (``--configs``), one ``relay serve --config CONFIG``, named after the file."""
    headers = {"Authorization": f"Bearer {args.relay_key}"} if args.relay_key else {}
    cpu_root = None
    variant = ingress or (config.stem if config is not None else None)
    name = f"relay {variant}" if variant else "relay"
    if args.relay_url:
        url = args.relay_url.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        relay = str(ROOT / ".venv" / "bin" / "relay")
        data_dir = procs.workdir / ("relay-data" if variant is None else f"relay-data-{variant}")
        argv = [relay, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        if ingress is not None:
            # Every mode with auth on, so that HAProxy may serve a loopback bind (relay.cli.serve.check_ingress)
            # and both pay the same key check.
            headers = {"Authorization": f"Bearer {create_admin_key(data_dir)}"}
            argv += ["--ingress", ingress]
        log(f"starting Relay: {' '.join(argv)}")
        process = name.replace(" ", "-")
        cpu_root = procs.start(process, argv, stop_with=signal.SIGINT)
        procs.wait_http(process, f"{url}/healthz", within_s=300)
    provider = {
        "provider_id": args.relay_model,
        "provider_type": "openai_compatible",
        "model_name": "fake",
        "base_url": f"{upstream_url}/v1",
        "api_key": "sk-fake",
        "max_retries": 0,  # an upstream failure must show as an error here, as it does direct
    }
    registered = [provider]
    if args.dedicated:  # the same upstream once more, on a pool of its own: shared against dedicated, one run
        registered.append(provider | {"provider_id": f"{args.relay_model}_dedicated", "dedicated": True})
    with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
        for entry in registered:
            answer = http.post("/api/streaming/providers/register", json=entry)
            if answer.status_code == 409:  # left by an earlier run: point it at this run's upstream
                http.delete(f"/api/streaming/providers/{entry['provider_id']}").raise_for_status()
                answer = http.post("/api/streaming/providers/register", json=entry)
            if answer.status_code != 201:
                raise RuntimeError(
                    f"registering {entry['provider_id']} in Relay: HTTP {answer.status_code} {answer.text}"
                )
    log(f"Relay at {url}, providers {[entry['provider_id'] for entry in registered]} -> {upstream_url}")
    # A Relay we did not start: every session actor on this machine counts, whoever's.
    actors = partial(_actors_in, cpu_root) if cpu_root is not None else partial(sample_titled, ACTOR_TITLE)
    return Target(name, f"{url}/v1/chat/completions", args.relay_model, headers, cpu_root, actors, f"{url}/api/stats")


def create_admin_key(data_dir: Path) -> str:
    """An admin key in the store ``relay serve --data-dir data_dir`` will open: auth on from its first request."""
    relay = str(ROOT / ".venv" / "bin" / "relay")
    done = subprocess.run(
        [relay, "keys", "create", "--user", "bench", "--admin", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _actors_in(root: int) -> CpuSample:
    return {pid: entry for pid, entry in sample_tree(root).items() if entry[0] == ACTOR_TITLE}


def ensure_litellm() -> Path:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        log(f"installing {LITELLM_PIN} into {LITELLM_VENV} (once; a few minutes)")
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN], check=True)
    return binary


def start_litellm(procs: Processes, upstream_url: str, workers: int) -> Target:
    binary = ensure_litellm()
    config = procs.workdir / f"litellm-x{workers}.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        f'    litellm_params: {{model: openai/fake, api_base: "{upstream_url}/v1", api_key: sk-fake}}\n'
        f"general_settings: {{master_key: {LITELLM_KEY}}}\n"
        "litellm_settings: {drop_params: true, telemetry: false}\n"
    )
    port = free_port()
    argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    name = f"litellm-x{workers}"
    log(f"starting {name}")
    # The local cost map: LiteLLM would otherwise fetch one over the network at start.
    pid = procs.start(name, [*argv, "--num_workers", str(workers)], LITELLM_LOCAL_MODEL_COST_MAP="True")
    procs.wait_http(name, f"http://127.0.0.1:{port}/health/liveliness", within_s=300)
    headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
    return Target(f"litellm x{workers}", f"http://127.0.0.1:{port}/v1/chat/completions", "fake", headers, pid)


def measure(
    target: Target, upstream_pid: int, concurrency: int, rounds: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One load run, with the CPU each party used meanwhile."""
    samples = {
        "gateway": (lambda: sample_tree(target.cpu_root)) if target.cpu_root else None,
        "actors": target.actors,
        "upstream": lambda: sample_tree(upstream_pid),
    }
    before = {key: sample() for key, sample in samples.items() if sample}
    client_start, started = time.process_time(), time.perf_counter()
    report = asyncio.run(
        run_load(
            target.url,
            model=target.model,
            concurrency=concurrency,
            rounds=rounds,
            expected=partial(reply_text, tokens=args.tokens),
            tokens=args.tokens,
            headers=target.headers,
            include_usage=args.include_usage and target.wire == "chat",
            wire=target.wire,
        )
    )
    wall = time.perf_counter() - started
    used = {key: cpu_percent(before[key], sample(), wall) for key, sample in samples.items() if sample}
    row = {"target": target.name, **report.as_dict()}
    row["gateway_cpu"] = round(sum(used["gateway"].values()), 1) if "gateway" in used else None
    row["actors_cpu"] = round(sum(used["actors"].values()), 1) if "actors" in used else None
    row["upstream_cpu"] = round(sum(used["upstream"].values()), 1)
    row["client_cpu"] = round(100 * (time.process_time() - client_start) / wall, 1)  # this process: the load
    # With 1-token replies (--tokens 1) this is the fixed CPU cost of a stream across the gateway's processes.
    if row["gateway_cpu"] is not None and report.streams:
        row["gateway_cpu_ms_per_stream"] = round(row["gateway_cpu"] * wall * 10 / report.streams, 1)
    row["gateway_cpu_by_process"] = used.get("gateway")
    for reason in report.error_samples:
        log(f"  {target.name} C={concurrency}: {reason}")
    return row


def warm_up(target: Target, args: argparse.Namespace) -> None:
    """Two streams, not measured: pools, connections and (in Relay) the pool's handle are up before timing."""
    options: dict[str, Any] = {
        "model": target.model,
        "concurrency": 2,
        "rounds": 1,
        "expected": partial(reply_text, tokens=args.tokens),
        "headers": target.headers,
        "wire": target.wire,
    }
    report = asyncio.run(run_load(target.url, **options))
    deadline = time.monotonic() + 120
    while report.ok < 2 and time.monotonic() < deadline:  # a pool just registered may still be starting
        log(f"warm-up through {target.name}: {report.error_samples}; again")
        time.sleep(2)
        report = asyncio.run(run_load(target.url, **options))
    if report.ok < 2:
        raise RuntimeError(f"warm-up through {target.name} failed: {report.error_samples}")
    if target.stats_url is not None:
        settle_session_actors(target.stats_url, target.headers)


def settle_session_actors(stats_url: str, headers: dict[str, str]) -> None:
    """The warm-up's sessions took pooled actors; wait for the directory to refill the pool before timing.

    Otherwise C=1 measures process starts (~1 s of CPU each on this machine), not the steady state.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sessions = httpx.get(stats_url, headers=headers, timeout=10).json()["sessions"]
        full = sessions["live_actors"] + sessions["pooled"] >= sessions["max_actors"]
        if sessions["creating"] == 0 and (full or sessions["pooled"] >= sessions["warm_pool_size"]):
            return
        time.sleep(0.5)
    log("the session directory was still starting actors after 60 s; measuring anyway")


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


@contextlib.contextmanager
def running_targets(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[int, list[Target]]]:
    procs = Processes(workdir)
    try:
        port = free_port()
        upstream_url = f"http://127.0.0.1:{port}"
        fake = [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(port)]
        fake += ["--ttft-ms", str(args.ttft_ms), "--rate", str(args.rate), "--tokens", str(args.tokens)]
        upstream_pid = procs.start("upstream", fake)
        procs.wait_http("upstream", f"{upstream_url}/v1/models", within_s=60)
        targets = [Target("direct", f"{upstream_url}/v1/chat/completions", "fake")]
        if args.litellm:
            targets += [start_litellm(procs, upstream_url, workers) for workers in args.litellm_workers]
        if args.configs:
            relays = [start_relay(procs, upstream_url, args, config=config) for config in args.configs]
        else:
            relays = [start_relay(procs, upstream_url, args, ingress) for ingress in args.ingress or [None]]
        targets += relays
        relay = relays[0]
        if args.dedicated:  # the same Relay and upstream, the provider on a dedicated pool
            targets.append(replace(relay, name="relay dedicated", model=f"{args.relay_model}_dedicated"))
        if args.responses:  # the same Relay, the Responses wire: its encoder against the chunk encoder, side by side
            responses_url = relay.url.replace("/v1/chat/completions", "/v1/responses")
            targets.append(replace(relay, name="relay responses", url=responses_url, wire="responses"))
        yield upstream_pid, targets
    except BaseException:
        for name in procs.exited():
            log(f"{name} had exited; the end of its log:\n{procs.tail(name)}")
        raise
    finally:
        log("stopping what this run started")
        procs.stop_all()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "loadavg_start": loadavg(),
        "upstream": {"ttft_ms": args.ttft_ms, "rate": args.rate, "tokens": args.tokens},
        "rounds": args.rounds,
        "concurrency": args.concurrency,
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp, running_targets(args, Path(tmp)) as started:
        upstream_pid, targets = started
        for target in targets:
            warm_up(target, args)
        for concurrency in args.concurrency:
            direct = None
            for target in targets:
                log(f"C={concurrency} {target.name}: {concurrency * args.rounds} streams")
                row = measure(target, upstream_pid, concurrency, args.rounds, args)
                direct = row["chars_per_s"] if target.name == "direct" else direct
                row["pct_of_direct"] = round(100 * row["chars_per_s"] / direct, 1) if direct else None
                rows.append(row)
    meta["loadavg_end"] = loadavg()
    title = (
        f"fake upstream: TTFT {args.ttft_ms:g} ms, {args.rate:g} tok/s, {args.tokens} tokens; "
        f"{args.rounds} rounds; {meta['cores']} cores; load {meta['loadavg_start']} -> {meta['loadavg_end']}"
    )
    table = markdown_table(rows)
    (args.out / "throughput.md").write_text(f"{title}; commit {meta['commit']}, {meta['date']}\n\n{table}")
    write_json(args.out / "throughput.json", meta, rows)
    if not write_chart(args.out / "throughput.png", rows, title):
        log("no matplotlib: no chart (pip install -e '.[bench]')")
    print(title + "\n\n" + table)
    return rows


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def _ingresses(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or not set(values) <= {"python", "haproxy"} or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError("a comma-separated list of python, haproxy")
    return values


def _configs(text: str) -> list[Path]:
    paths = [Path(part.strip()).resolve() for part in text.split(",") if part.strip()]
    missing = [str(path) for path in paths if not path.is_file()]
    if not paths or missing or len({path.stem for path in paths}) != len(paths):
        raise argparse.ArgumentTypeError(f"comma-separated Serve config files with distinct names; missing: {missing}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=_ints, default=[1, 32, 128], help="e.g. 1,32,128")
    parser.add_argument("--rounds", type=int, default=3, help="streams per client, back to back")
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--rate", type=float, default=50.0, help="upstream tokens/s per stream")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per reply")
    parser.add_argument("--include-usage", action="store_true", help="ask for the usage chunk and check it")
    parser.add_argument("--relay-url", default=None, help="a running Relay (default: start one)")
    parser.add_argument("--relay-key", default=os.environ.get("RELAY_API_KEY"), help="default: $RELAY_API_KEY")
    parser.add_argument("--relay-model", default="bench", help="the provider id to register")
    parser.add_argument("--litellm", action="store_true", help=f"also measure LiteLLM ({LITELLM_PIN})")
    parser.add_argument("--responses", action="store_true", help="also stream through /v1/responses (same Relay)")
    parser.add_argument(
        "--dedicated", action="store_true", help="also register the upstream on a dedicated pool and stream through it"
    )
    parser.add_argument("--litellm-workers", type=_ints, default=[1], help="e.g. 1,2: one proxy per count")
    parser.add_argument(
        "--ingress",
        type=_ingresses,
        default=None,
        help="e.g. python,haproxy: one Relay per Serve ingress, each with an admin key (default: one, relay serve's)",
    )
    parser.add_argument(
        "--configs",
        type=_configs,
        default=None,
        help="e.g. config/serve.yaml,/tmp/wide.yaml: one Relay per Serve config file, named by its stem",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tokens < 1:
        parser.error("--rounds and --tokens must be at least 1")
    if (args.ingress or args.configs) and args.relay_url:
        parser.error("--ingress and --configs start their own Relays; they do not go with --relay-url")
    if args.ingress and args.configs:
        parser.error("--ingress and --configs each start their own Relays; pick one")
    rows = run(args)
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
