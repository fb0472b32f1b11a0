"""The runner's outputs: a Markdown table, a JSON file and a PNG chart of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

__all__ = ["COLUMNS", "markdown_table", "write_chart", "write_json"]

# (header, row key); a row is a LoadReport's fields plus target, pct_of_direct and the CPU figures.
COLUMNS: list[tuple[str, str]] = [
    ("C", "concurrency"),
    ("target", "target"),
    ("streams", "streams"),
    ("ok", "ok"),
    ("errors", "errors"),
    ("inexact", "inexact"),
    ("TTFT p50 ms", "ttft_p50_ms"),
    ("TTFT p99 ms", "ttft_p99_ms"),
    ("stream p50 ms", "stream_p50_ms"),
    ("stream p99 ms", "stream_p99_ms"),
    ("chars/s", "chars_per_s"),
    ("% of direct", "pct_of_direct"),
    ("gateway CPU %", "gateway_cpu"),
    ("session actors CPU %", "actors_cpu"),
    ("upstream CPU %", "upstream_cpu"),
    ("gateway CPU ms/stream", "gateway_cpu_ms_per_stream"),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (concurrency, target); CPU in % of one core (200 % is both cores of a 2-core machine)."""
    lines = [
        "| " + " | ".join(header for header, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cell(row.get(key)) for _, key in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    path.write_bytes(orjson.dumps({"meta": meta, "rows": rows}, option=orjson.OPT_INDENT_2))


def write_chart(path: Path, rows: list[dict[str, Any]], title: str) -> bool:
    """Throughput, TTFT p50 and stream p99 against concurrency, one line per target; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    targets = list(dict.fromkeys(row["target"] for row in rows))
    panels = [
        ("chars_per_s", "delivered chars/s"),
        ("ttft_p50_ms", "TTFT p50 (ms)"),
        ("stream_p99_ms", "stream p99 (ms)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for axis, (key, label) in zip(axes, panels, strict=True):
        for target in targets:
            points = [(r["concurrency"], r[key]) for r in rows if r["target"] == target and r[key] is not None]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=target)
        axis.set_xscale("log", base=2)
        concurrencies = sorted({row["concurrency"] for row in rows})
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_ylim(bottom=0)
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
