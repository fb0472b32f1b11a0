"""The throughput harness runs: its fake upstream and load generator in-process, every stream's text checked.

Speed is never asserted here, only that the benchmark measures, checks and reports (benchmarks/run.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from benchmarks.bench_loop_lag import DelayProxy, StoreOnTheLoop, fresh_schema, measure, through
from benchmarks.fake_upstream import FakeUpstream, reply_text
from benchmarks.loadgen import LoadReport, percentile, run_load
from benchmarks.report import markdown_table
from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from relay.store.postgres import PostgresStore
from tests.conftest import PG_BASE
from tests.fakes.openai_upstream import ServerThread

TOKENS = 5
TAG_LENGTH = len("a1b2c3c0r0")  # the load generator's tags: 6 hex chars, client and round


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ServerThread(FakeUpstream(ttft_s=0.01, rate=500.0, tokens=TOKENS)) as server:
        yield server.url


EXPECTED = partial(reply_text, tokens=TOKENS)


async def two_streams(url: str, expected: Callable[[str], str] = EXPECTED, tokens: int = TOKENS) -> LoadReport:
    return await run_load(
        url, model="fake", concurrency=2, rounds=1, expected=expected, tokens=tokens, include_usage=True
    )


async def test_every_stream_is_exactly_what_the_upstream_sent(upstream: str) -> None:
    report = await two_streams(f"{upstream}/v1/chat/completions")

    assert (report.streams, report.ok, report.errors, report.inexact) == (2, 2, 0, 0), report.error_samples
    assert report.chars == 2 * len(reply_text("x" * TAG_LENGTH, TOKENS))
    assert report.ttft_p50_ms is not None and report.ttft_p99_ms is not None
    assert report.stream_p99_ms is not None and report.stream_p99_ms >= report.ttft_p99_ms
    assert report.chars_per_s > 0


async def test_the_report_has_the_benchmark_columns(upstream: str) -> None:
    report = await two_streams(f"{upstream}/v1/chat/completions")

    lines = markdown_table([{"target": "direct", **report.as_dict()}]).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = dict(zip(header, (cell.strip() for cell in lines[2].strip("|").split("|")), strict=True))
    expected = ["C", "target", "streams", "ok", "errors", "inexact", "TTFT p50 ms", "TTFT p99 ms"]
    expected += ["stream p50 ms", "stream p99 ms", "chars/s", "% of direct", "gateway CPU %", "session actors CPU %"]
    assert header[: len(expected)] == expected
    counts = [row[k] for k in ("C", "target", "streams", "ok", "errors", "inexact")]
    assert counts == ["2", "direct", "2", "2", "0", "0"]
    assert float(row["TTFT p50 ms"]) == report.ttft_p50_ms
    assert row["gateway CPU %"] == "-"  # not measured in-process


async def test_a_wrong_text_or_usage_is_counted_as_inexact(upstream: str) -> None:
    wrong_text = await two_streams(f"{upstream}/v1/chat/completions", expected=partial(reply_text, tokens=TOKENS - 1))
    wrong_usage = await two_streams(f"{upstream}/v1/chat/completions", tokens=TOKENS + 1)

    for report in (wrong_text, wrong_usage):
        assert (report.ok, report.errors, report.inexact, report.chars) == (0, 2, 2, 0)
        assert report.ttft_p50_ms is None and "not the upstream's text" in report.error_samples[0]


async def test_a_failing_target_is_counted_as_errors(upstream: str) -> None:
    report = await two_streams(f"{upstream}/v1/nowhere")

    assert (report.ok, report.errors, report.inexact) == (0, 2, 0)
    assert report.error_samples[0].startswith("RuntimeError: HTTP 404")


def test_the_upstream_speaks_openai_to_the_sdk(upstream: str) -> None:
    with httpx.Client() as http:
        client = openai.OpenAI(base_url=f"{upstream}/v1", api_key="sk-any", http_client=http, max_retries=0)
        usage = {"include_usage": True}
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "abc"}], stream=True, stream_options=usage
        )
        chunks = list(stream)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "not a tag"}])
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="m", input="x")

    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply_text("abc", TOKENS)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert reply.choices[0].message.content == reply_text("t", TOKENS)  # no tag: the fallback text


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([3.0, 1.0, 2.0], 0.99) == 3.0
    assert percentile([float(v) for v in range(1, 101)], 0.99) == 99.0


async def test_the_responses_wire_is_measured_through_relay(upstream: str, tmp_path: Path) -> None:
    """``run.py --responses``: the same streams through ``/v1/responses``, each text checked exactly."""
    provider = ProviderConfig(provider_id="bench", provider_type="openai_compatible", base_url=f"{upstream}/v1")
    settings = RelaySettings(store_url=f"sqlite:///{tmp_path}/relay.db", providers=[provider])
    with ServerThread(build_app(LocalBackend(settings))) as relay:
        report = await run_load(
            f"{relay.url}/v1/responses", model="bench", concurrency=2, rounds=2, expected=EXPECTED, wire="responses"
        )
    assert (report.streams, report.ok, report.errors, report.inexact) == (4, 4, 0, 0), report.error_samples
    assert report.chars == 4 * len(reply_text("x" * TAG_LENGTH, TOKENS))


def test_the_loop_lag_benchmark_measures_both_stores_through_its_delaying_proxy() -> None:
    """bench_loop_lag's pieces on this machine's PostgreSQL: every turn stored, every probe wake-up counted."""
    target = urlsplit(PG_BASE)
    for make in (StoreOnTheLoop, PostgresStore):
        with fresh_schema(PG_BASE) as url, DelayProxy(target.hostname or "", target.port or 5432, 0.001) as proxy:
            store = make(through(url, proxy.port), pool_max=2, application_name="bench-smoke")
            try:
                result = asyncio.run(measure(store, sessions=2, turns=1))  # asserts every message was stored
            finally:
                store.close()
        assert result["turns/s"] > 0 and result["wake-ups"] >= 1 and result["lag p99 ms"] >= 0
