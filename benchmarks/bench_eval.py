"""``relay eval`` throughput: 1,000 rows x 3 echo providers, 50 cells in flight per provider.

Each echo provider answers after ``--ttft-ms`` and then streams the prompt's
words at ``--tokens-per-s``, so one cell takes ``ttft + (words - 1) / rate``
and, with 50 in flight, the ideal run is ``ceil(rows / 50)`` such waves (the
three providers run side by side). The script prints the measured wall time
of the run (pools already deployed), that ideal, and their ratio.

    .venv/bin/python benchmarks/bench_eval.py            # 1,000 rows
    .venv/bin/python benchmarks/bench_eval.py --rows 200  # a quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time

import ray

from actors.evaluation import NAMESPACE, ensure_pools, run_on_cluster
from relay.config import ProviderConfig, RelaySettings
from relay.evaluation import EvalOptions, Price, PriceTable
from relay.evaluation.api import prepare
from relay.evaluation.progress import Progress

PROVIDERS = ("bench-a", "bench-b", "bench-c")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=60.0)
    parser.add_argument("--words", type=int, default=30, help="words per prompt: the echo streams them back")
    parser.add_argument(
        "--rpm", type=float, default=None, help="a cluster-wide rpm per provider (high: measures the limiter's cost)"
    )
    args = parser.parse_args()

    configs = [
        ProviderConfig(
            provider_id=name,
            provider_type="echo",
            model="echo",
            options={"ttft_ms": args.ttft_ms, "tokens_per_s": args.tokens_per_s},
        )
        for name in PROVIDERS
    ]
    settings = RelaySettings(providers=configs)
    words = " ".join(f"w{i}" for i in range(args.words - 1))
    rows = [{"id": f"r{i}", "prompt": f"{i} {words}", "expected": str(i)} for i in range(args.rows)]
    prepared = prepare(rows, ",".join(PROVIDERS), configs, ["contains"])
    limits = {name: args.rpm for name in PROVIDERS} if args.rpm else {}
    options = EvalOptions(concurrency=args.in_flight, rpm=limits)
    cell_s = args.ttft_ms / 1000 + (args.words - 1) / args.tokens_per_s
    ideal_s = math.ceil(args.rows / args.in_flight) * cell_s

    ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        ensure_pools(list(PROVIDERS), configs, settings)
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = asyncio.run(
                run_on_cluster(
                    prepared,
                    settings=settings,
                    options=options,
                    out=out,
                    prices=PriceTable({"echo": Price(0, 0)}),
                    progress=Progress(sys.stderr),
                    keep_pools=True,
                )
            )
            total_s = time.perf_counter() - started
    finally:
        ray.shutdown()

    cells = len(result.records)
    errors = sum(s.errors for s in result.summaries)
    figures = {
        "rows": args.rows,
        "providers": len(PROVIDERS),
        "cells": cells,
        "errors": errors,
        "in_flight_per_provider": args.in_flight,
        "rpm": args.rpm,
        "cell_s": round(cell_s, 4),
        "ideal_s": round(ideal_s, 2),
        "wall_s": round(result.wall_s, 2),
        "wall_with_reports_s": round(total_s, 2),
        "ratio": round(result.wall_s / ideal_s, 2),
        "cells_per_s": round(cells / result.wall_s, 1),
        "latency_p50_ms": [round(s.latency_p50 or 0, 1) for s in result.summaries],
        "cpus": os.cpu_count(),
    }
    print(
        f"{cells} cells ({args.rows} rows x {len(PROVIDERS)} echo providers, {args.in_flight} in flight each), "
        f"{errors} errors: wall {result.wall_s:.2f} s vs ideal {ideal_s:.2f} s "
        f"(= {math.ceil(args.rows / args.in_flight)} waves x {cell_s * 1000:.0f} ms) -> ratio {figures['ratio']:.2f}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
