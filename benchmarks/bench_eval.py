"""``relay eval`` throughput on the shared pool: streamed cells against whole-reply cells, 3 and 10 providers.

Starts its own local Ray cluster and the relay app (config/serve.yaml, the shared pool pinned at
``--shared-replicas``), registers echo providers on the shared pool through the HTTP API, and runs
``--rows`` rows on 3 of them, then on 10, 50 cells in flight per provider, after one warm-up call
per provider and mode. Each set runs ``--rounds`` times per mode, the modes interleaved, each going
first in turn:

- ``streamed``: a cell streams its pool's token batches (one Ray item each) and folds them in the driver;
- ``whole``: a cell is one call to the pool's ``complete``, the reply folded and timed in the pool.

Each echo answers after ``--ttft-ms`` and then streams the prompt's words at ``--tokens-per-s``, so a
cell takes ``ttft + (words - 1) / rate``, and the ideal run is ``ceil(rows / in_flight)`` such waves
(the providers run side by side). Printed per run: wall against that ideal, the cell latency the
records hold (timed in the pool for whole cells, in the driver for streamed ones) and the cell time
seen by the driver, p50 and p99, and errors; then the cluster's processes before and after the 10
providers were registered and run, and the load average before and after.

    .venv/bin/python benchmarks/bench_eval.py                       # 1,000 rows, 3 then 10 providers
    .venv/bin/python benchmarks/bench_eval.py --rows 200 --sets 3  # a quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
from ray import serve

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from procfs import CpuSample, cpu_percent, sample_tree  # noqa: E402

from actors.deploy import apply_ray_env, deploy_config  # noqa: E402
from actors.evaluation import NAMESPACE, PoolReplies, served_pools  # noqa: E402
from relay.cli.serve import load_serve_config  # noqa: E402
from relay.config import ProviderConfig  # noqa: E402
from relay.evaluation import EvalOptions, LocalProviderLimiter, Price, PriceTable  # noqa: E402
from relay.evaluation.api import prepare, run_evaluation  # noqa: E402
from relay.evaluation.progress import Progress  # noqa: E402
from relay.providers.whole import WholeReply  # noqa: E402
from relay.request import ChatRequest  # noqa: E402
from tests.fakes.openai_upstream import free_port  # noqa: E402

MODES = ("streamed", "whole")


class Timed:
    """The cell's time as the driver sees it, around whichever call the mode makes."""

    def __init__(self, replies: PoolReplies) -> None:
        self.replies = replies
        self.ms: list[float] = []

    async def __call__(self, request: ChatRequest) -> WholeReply:
        started = time.perf_counter()
        try:
            return await self.replies(request)
        finally:
            self.ms.append((time.perf_counter() - started) * 1000)


def percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (round(values[0], 1), round(values[0], 1)) if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[98], 1)


def tree() -> CpuSample:
    """This driver (``driver``) and the cluster it started, a Python helper by its script (``log_monitor.py``)."""
    sample = sample_tree(os.getpid())
    for pid, (title, started, cpu) in sample.items():
        if pid == os.getpid():
            sample[pid] = ("driver", started, cpu)
        elif title == "python":
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                script = next((arg for arg in argv[1:] if arg and not arg.startswith("-")), title)
                sample[pid] = (Path(script).name, started, cpu)
    return sample


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def processes() -> tuple[int, int]:
    """(processes, RSS MB) of this driver and the whole cluster it started."""
    pids = sample_tree(os.getpid())
    return len(pids), sum(map(rss_kb, pids)) // 1024


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def register(url: str, names: list[str], echo: dict[str, float]) -> list[float]:
    """Each provider through the HTTP API, as an operator registers one; the seconds each took."""
    seconds = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for name in names:
            started = time.perf_counter()
            body = {"provider_id": name, "provider_type": "echo", "model_name": "echo", "options": echo}
            created = await http.post("/api/streaming/providers/register", json=body)
            created.raise_for_status()
            seconds.append(time.perf_counter() - started)
    return seconds


async def run(
    names: list[str], configs: list[ProviderConfig], mode: str, args: argparse.Namespace, ideal_s: float
) -> dict[str, Any]:
    words = " ".join(f"w{i}" for i in range(args.words - 1))
    rows = [{"id": f"r{i}", "prompt": f"{i} {words}", "expected": str(i)} for i in range(args.rows)]
    prepared = prepare(rows, ",".join(names), configs, ["contains"])
    served = await served_pools()
    timed = Timed(PoolReplies({name: served[name] for name in names}, streamed=mode == "streamed"))
    cpu_before, started = tree(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = await run_evaluation(
            prepared,
            complete=timed,
            limiter=LocalProviderLimiter(),  # no rpm here: no limiter round trips, as on a cluster
            out=out,
            options=EvalOptions(concurrency=args.in_flight),
            prices=PriceTable({"echo": Price(0, 0)}),
            progress=Progress(sys.stderr) if args.progress else None,
        )
    cpu = cpu_percent(cpu_before, tree(), time.perf_counter() - started)
    exact = sum(r["output"] == r["prompt"] for r in result.records)
    recorded = percentiles([r["latency_ms"] for r in result.records if r["status"] == "ok"])
    driver = percentiles(timed.ms)
    return {
        "providers": len(names),
        "mode": mode,
        "cells": len(result.records),
        "errors": sum(s.errors for s in result.summaries),
        "exact": exact,
        "wall_s": round(result.wall_s, 2),
        "ideal_s": round(ideal_s, 2),
        "ratio": round(result.wall_s / ideal_s, 2),
        "recorded_p50_ms": recorded[0],
        "recorded_p99_ms": recorded[1],
        "driver_p50_ms": driver[0],
        "driver_p99_ms": driver[1],
        "ttft_p50_ms": percentiles([r["ttft_ms"] for r in result.records if r["ttft_ms"] is not None])[0],
        # % of one core over the run (reports included), by process: where the time goes.
        "cpu_pct": {group: pct for group, pct in sorted(cpu.items(), key=lambda item: -item[1]) if pct >= 5},
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    echo = {"ttft_ms": args.ttft_ms, "tokens_per_s": args.tokens_per_s}
    largest = max(args.sets)
    names = [f"bench-{i}" for i in range(largest)]
    configs = [ProviderConfig(provider_id=n, provider_type="echo", model="echo", options=echo) for n in names]
    cell_s = args.ttft_ms / 1000 + (args.words - 1) / args.tokens_per_s
    ideal_s = math.ceil(args.rows / args.in_flight) * cell_s
    before, pids_before = processes(), set(tree())
    registered = await register(url, names, echo)
    after_registration = processes()
    # One call per provider and mode first: routers, multiplexed runtimes and SDK clients are built before any run.
    served = await served_pools()
    for mode in args.modes:
        replies = PoolReplies({name: served[name] for name in names}, streamed=mode == "streamed")
        await asyncio.gather(*(replies(ChatRequest(name, [{"role": "user", "content": "warm"}])) for name in names))
    runs = []
    for count in sorted(args.sets):
        for round_ in range(args.rounds):
            for mode in args.modes[round_ % 2 :] + args.modes[: round_ % 2]:  # each mode goes first in turn
                print(f"{count} providers, {mode} cells ...", file=sys.stderr)
                runs.append(await run(names[:count], configs, mode, args, ideal_s))
                print(json.dumps(runs[-1]), file=sys.stderr)
    return {
        "cell_s": round(cell_s, 4),
        "ideal_s": round(ideal_s, 2),
        "registration_ms_p50": round(statistics.median(registered) * 1000, 1),
        "processes_before": before,
        "processes_after_registration": after_registration,
        "processes_after_runs": processes(),
        "processes_added": sorted(title for pid, (title, _, _) in tree().items() if pid not in pids_before),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=60.0)
    parser.add_argument("--words", type=int, default=30, help="words per prompt: the echo streams them back")
    parser.add_argument("--sets", type=lambda s: [int(n) for n in s.split(",")], default=[3, 10], help="3,10")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="streamed,whole")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each mode per set, interleaved")
    parser.add_argument(
        "--shared-replicas", type=int, default=1, help="pinned: interleaved runs must see the same pool"
    )
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if unknown := set(args.modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}")

    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        config = load_serve_config(ROOT / "config" / "serve.yaml", host="127.0.0.1", port=port, data_dir=Path(data_dir))
        app_args: dict[str, Any] = config["applications"][0]["args"]
        app_args["pool_autoscaling"] = None
        app_args["shared_pool"] = {"num_replicas": args.shared_replicas}
        app_args["sessions"] = {"warm_pool_size": 0}  # an evaluation uses no session actor
        load_before = loadavg()
        apply_ray_env()  # the cluster runs Serve as `relay serve` runs it
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
        try:
            deploy_config(config)
            figures = asyncio.run(measure(f"http://127.0.0.1:{port}", args))
        finally:
            serve.shutdown()
            ray.shutdown()
    figures |= {"rows": args.rows, "in_flight": args.in_flight, "cpus": os.cpu_count()}
    figures |= {"loadavg_before": load_before, "loadavg_after": loadavg()}

    print(
        f"{args.rows} rows x N echo providers on the shared pool ({args.shared_replicas} replica), "
        f"{args.in_flight} in flight each; cell {figures['cell_s'] * 1000:.0f} ms, ideal {figures['ideal_s']:.2f} s"
    )
    print(
        "| providers | cells | wall s | x ideal | errors | exact | recorded p50 / p99 ms | driver p50 / p99 ms | mode |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in figures["runs"]:
        print(
            f"| {r['providers']} | {r['cells']} | {r['wall_s']} | {r['ratio']} | {r['errors']} | {r['exact']} | "
            f"{r['recorded_p50_ms']} / {r['recorded_p99_ms']} | {r['driver_p50_ms']} / {r['driver_p99_ms']} | "
            f"{r['mode']} |"
        )
    print(
        f"processes (count, RSS MB): {figures['processes_before']} before registering {max(args.sets)} providers, "
        f"{figures['processes_after_registration']} after, {figures['processes_after_runs']} after the runs "
        f"(new: {', '.join(figures['processes_added']) or 'none'}); "
        f"registration p50 {figures['registration_ms_p50']} ms; load {figures['loadavg_before']} -> "
        f"{figures['loadavg_after']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
