"""Prices and the worst-case estimate, the rate buckets, the summary figures and the progress lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relay.evaluation import CostCeilingExceeded, PriceTable, ProviderRateLimits, estimate_cost, parse_rows, plan_cells
from relay.evaluation.costs import Price, estimate_input_tokens
from relay.evaluation.limits import BURST_S
from relay.evaluation.plan import Candidate
from relay.evaluation.progress import Progress
from relay.evaluation.summary import percentile, summarize, summary_table

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_price_lookup_prefers_provider_and_model_then_model_then_provider() -> None:
    table = PriceTable.from_mapping(
        {
            "prices": {
                "oa/gpt-4o": {"input": 1, "output": 2},
                "gpt-4o": {"input": 3, "output": 4},
                "local": {"input": 0, "output": 0},
            }
        }
    )
    assert table.lookup("oa", "gpt-4o") == Price(1, 2)
    assert table.lookup("azure", "gpt-4o") == Price(3, 4)
    assert table.lookup("local", "anything") == Price(0, 0)
    assert table.lookup("other", "unknown") is None
    assert table.cost("oa", "gpt-4o", 1_000_000, 500_000) == 2.0


def test_shipped_price_table_loads_and_echo_is_free() -> None:
    table = PriceTable.load(ROOT / "config" / "prices.yaml")
    assert table.cost("echo", "echo", 10**6, 10**6) == 0.0
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prices": {"m": {"input": 1}}}, "needs 'input' and 'output'"),
        ({"prices": {"m": {"input": -1, "output": 1}}}, "non-negative"),
        ({"prices": ["m"]}, "expected a mapping"),
    ],
)
def test_bad_price_tables_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable.from_mapping(data)


def test_worst_case_counts_every_reply_at_max_tokens() -> None:
    rows = parse_rows([{"id": "a", "prompt": "x" * 40}, {"id": "b", "prompt": "y" * 8, "params": {"max_tokens": 10}}])
    assert estimate_input_tokens(rows[0].messages) == 4 + 10
    priced = Candidate("oa", "m", "oa", default_max_tokens=100)
    free = Candidate("echo", "echo", "echo")
    cells = plan_cells(rows, [priced, free], repeat=2)
    table = PriceTable({"m": Price(input=1_000_000, output=2_000_000), "echo": Price(0, 0)})
    estimate = estimate_cost(cells, table)
    # per call: row a (14 in, 100 out) = 14 + 200 dollars; row b (6 in, 10 out) = 6 + 20; two repeats each
    assert estimate.per_label == {"oa": 2 * (214 + 26), "echo": 0.0}
    assert estimate.total == 480 and estimate.cells == 8 and not estimate.unpriced
    judged = estimate_cost(cells[:1], table, judges=[(priced, 50)])
    # the judge reads the prompt, a full reply and ~300 rubric tokens, and writes up to 50
    assert judged.per_label["judge oa"] == (14 + 100 + 300) + 100
    assert judged.cells == 1


def test_unpriced_models_make_a_ceiling_refuse() -> None:
    cells = plan_cells(parse_rows([{"prompt": "hi"}]), [Candidate("mystery", "m1", "mystery")])
    estimate = estimate_cost(cells, PriceTable())
    assert estimate.unpriced == ["mystery/m1"] and estimate.total == 0
    error = CostCeilingExceeded(estimate, 5.0)
    assert "no price is known for mystery/m1" in str(error) and "--force" in str(error)


def test_token_bucket_reserves_into_debt_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limits = ProviderRateLimits(clock)
    limits.configure("oa", rpm=60)  # 1 per second, a burst of BURST_S requests
    waits = [limits.reserve("oa", 0) for _ in range(int(BURST_S) + 2)]
    assert waits[: int(BURST_S)] == [0.0] * int(BURST_S)
    assert waits[-2:] == pytest.approx([1.0, 2.0])
    clock.now += 5
    assert limits.reserve("oa", 0) == pytest.approx(0.0)  # 5 s refilled 5 requests, 2 were owed
    assert limits.reserve("free", 10**9) == 0.0  # no limits configured


def test_tokens_per_minute_are_settled_with_the_reported_usage() -> None:
    clock = Clock()
    limits = ProviderRateLimits(clock)
    limits.configure("oa", tpm=600)  # 10 tokens/s, a bucket of 100
    assert limits.reserve("oa", 100) == 0.0
    assert limits.reserve("oa", 50) == pytest.approx(5.0)
    limits.settle("oa", reserved=100, used=30)  # the first call used less than estimated
    assert limits.reserve("oa", 20) == pytest.approx(0.0)
    limits.settle("oa", reserved=20, used=70)  # and a later one more
    assert limits.reserve("oa", 10) == pytest.approx(6.0)
    # a correction may ride on the next reservation: 60 tokens given back, then 10 taken
    assert limits.reserve("oa", 10, correction=-60) == pytest.approx(1.0)


def test_a_retry_after_pauses_the_provider_and_configure_lifts_limits() -> None:
    clock = Clock()
    limits = ProviderRateLimits(clock)
    limits.pause("oa", 3.0)
    assert limits.reserve("oa", 1) == pytest.approx(3.0)
    clock.now += 3
    assert limits.reserve("oa", 1) == 0.0
    limits.configure("oa", rpm=6)
    limits.reserve("oa", 0)
    assert limits.reserve("oa", 0) == pytest.approx(10.0)
    limits.configure("oa", rpm=None)
    assert limits.reserve("oa", 0) == 0.0
    assert limits.snapshot()["oa"]["granted"] == 5
    with pytest.raises(ValueError, match="must be positive"):
        limits.configure("oa", tpm=0)


def record(label: str, latency: float, *, passed: bool = True, error: bool = False, cost: float | None = 0.5) -> dict:
    return {
        "label": label,
        "provider": label,
        "model": "m",
        "status": "error" if error else "ok",
        "passed": passed and not error,
        "latency_ms": latency,
        "ttft_ms": latency / 2,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost": cost,
        "judge_cost": 0.0,
    }


def test_summary_figures_per_candidate() -> None:
    assert percentile([10, 20, 30, 40], 0.5) == 25 and percentile([], 0.5) is None
    records = [record("a", float(ms)) for ms in range(10, 110, 10)] + [
        record("b", 5, passed=False),
        record("b", 7, error=True, cost=None),
    ]
    a, b, never = summarize(records, ["a", "b", "never"])
    assert (a.cells, a.errors, a.pass_rate) == (10, 0, 1.0)
    assert a.latency_p50 == 55 and a.latency_p95 == pytest.approx(95.5) and a.ttft_p50 == 27.5
    assert (a.input_tokens, a.output_tokens, a.cost) == (100, 50, 5.0)
    assert (b.cells, b.errors, b.pass_rate, b.cost) == (2, 1, 0.0, None)
    assert b.latency_p50 == 5  # errored cells are left out of latency
    assert never.cells == 0
    table = summary_table([a, b]).splitlines()
    assert table[0].split()[:4] == ["provider", "cells", "errors", "pass"]
    assert "100.0%" in table[2] and "55 ms" in table[2] and "$5.0000" in table[2]
    assert "unpriced" in table[3]


def test_progress_lines_show_throughput_and_errors_per_candidate() -> None:
    clock = Clock()
    out = io.StringIO()
    progress = Progress(out, interactive=False, clock=clock, interval_s=1000)
    progress.start({"echo": 4, "oa": 2})
    clock.now += 2
    for _ in range(4):
        progress.update("echo", error=False)
    progress.update("oa", error=True)
    lines = progress.render()
    assert lines[0].startswith("eval 5/6  83% [") and "2.5 cells/s  ETA 0s" in lines[0]
    assert lines[1] == "  echo  4/4  2.0/s  0 errors"
    assert lines[2] == "  oa    1/2  0.5/s  1 error"
    progress.close()
    assert out.getvalue().count("eval ") == 2  # the first draw and the last; updates wait for the interval


def test_progress_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, interactive=True, clock=Clock(), interval_s=0)
    progress.start({"echo": 1})
    progress.update("echo", error=False)
    assert "\x1b[2F" in out.getvalue()  # back up over the two lines drawn before
