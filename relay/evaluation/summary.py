"""Per-candidate figures from the cell records, and the table printed at the end of a run.

The table is drawn by ``relay.cli.output`` (rich, plain text into a pipe): the
terminal is where it is read, and that module imports nothing of Relay's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Column, Table

from relay.cli.output import new_table, plain_text

__all__ = [
    "CandidateSummary",
    "SUMMARY_HEADER",
    "summarize",
    "summary_grid",
    "summary_row",
    "summary_table",
    "percentile",
    "below_threshold",
    "format_ms",
]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(slots=True)
class CandidateSummary:
    label: str
    provider: str
    model: str
    cells: int = 0
    errors: int = 0
    # Cells a provider budget did not admit (relay.evaluation.runner): not called, called again on resume.
    refused: int = 0
    passed: int = 0
    latency_p50: float | None = None
    latency_p95: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    # None when a cell of this candidate had no price.
    cost: float | None = 0.0
    judge_cost: float = 0.0

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cells if self.cells else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__} | {"pass_rate": self.pass_rate}


def summarize(records: Iterable[dict[str, Any]], labels: Sequence[str] = ()) -> list[CandidateSummary]:
    """One summary per candidate label, in ``labels`` order, then any other label in order of appearance."""
    by_label: dict[str, CandidateSummary] = {label: CandidateSummary(label, "", "") for label in labels}
    latencies: dict[str, list[float]] = {}
    ttfts: dict[str, list[float]] = {}
    for record in records:
        label = record["label"]
        summary = by_label.setdefault(label, CandidateSummary(label, "", ""))
        summary.provider, summary.model = record["provider"], record["model"]
        summary.cells += 1
        summary.errors += record["status"] == "error"
        summary.refused += record["status"] == "refused"
        summary.passed += bool(record.get("passed"))
        summary.input_tokens += record.get("input_tokens") or 0
        summary.output_tokens += record.get("output_tokens") or 0
        summary.judge_cost += record.get("judge_cost") or 0.0
        if record.get("cost") is None:
            summary.cost = None
        elif summary.cost is not None:
            summary.cost += record["cost"]
        if record["status"] == "ok":
            if record.get("latency_ms") is not None:
                latencies.setdefault(label, []).append(record["latency_ms"])
            if record.get("ttft_ms") is not None:
                ttfts.setdefault(label, []).append(record["ttft_ms"])
    for label, summary in by_label.items():
        summary.latency_p50 = percentile(latencies.get(label, []), 0.5)
        summary.latency_p95 = percentile(latencies.get(label, []), 0.95)
        summary.ttft_p50 = percentile(ttfts.get(label, []), 0.5)
        summary.ttft_p95 = percentile(ttfts.get(label, []), 0.95)
    return list(by_label.values())


def below_threshold(summaries: Iterable[CandidateSummary], fail_under: float) -> list[CandidateSummary]:
    return [s for s in summaries if s.pass_rate < fail_under]


def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _cost(value: float | None) -> str:
    return "unpriced" if value is None else f"${value:,.4f}"


SUMMARY_HEADER = (
    "provider",
    "cells",
    "errors",
    "pass rate",
    "latency p50",
    "latency p95",
    "TTFT p50",
    "TTFT p95",
    "tokens in",
    "tokens out",
    "cost",
)


def summary_row(s: CandidateSummary) -> tuple[str, ...]:
    """One provider's line of the summary, as the terminal table and the HTML report both show it."""
    return (
        s.label,
        str(s.cells),
        str(s.errors) + (f" ({s.refused} refused: budget)" if s.refused else ""),
        f"{s.pass_rate:.1%}",
        format_ms(s.latency_p50),
        format_ms(s.latency_p95),
        format_ms(s.ttft_p50),
        format_ms(s.ttft_p95),
        f"{s.input_tokens:,}",
        f"{s.output_tokens:,}",
        _cost(s.cost) + (f" (+judge ${s.judge_cost:,.4f})" if s.judge_cost else ""),
    )


def summary_grid(summaries: Sequence[CandidateSummary], *, terminal: bool) -> Table:
    """The summary as a rich table: styled with a drawn rule on a terminal, plain with dashes otherwise."""
    columns = [Column(SUMMARY_HEADER[0]), *(Column(name, justify="right") for name in SUMMARY_HEADER[1:])]
    table = new_table(*columns, terminal=terminal)
    for summary in summaries:
        style = "red" if terminal and summary.errors else None
        table.add_row(*summary_row(summary), style=style)
    return table


def summary_table(summaries: Sequence[CandidateSummary]) -> str:
    """The plain-text summary: a header, a rule of dashes, one line per candidate."""
    return plain_text(summary_grid(summaries, terminal=False))
