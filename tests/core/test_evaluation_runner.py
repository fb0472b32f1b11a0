"""The runner in one process (``evaluate_local``): real adapters against the fake OpenAI and Anthropic servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from relay.config import ProviderConfig
from relay.evaluation import (
    CostCeilingExceeded,
    EvalOptions,
    Evaluation,
    LocalProviderLimiter,
    Price,
    PriceTable,
    ProviderRateLimits,
    ResultStore,
    RuntimeReplies,
    parse_rows,
)
from relay.evaluation.api import evaluate_local
from relay.evaluation.plan import Candidate
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI

FREE = PriceTable({"echo": Price(0, 0), "oa": Price(0, 0), "claude": Price(0, 0)})
# Fast retries, and a breaker that stays closed: these tests count every upstream request.
QUICK = {"retry_base_s": 0.01, "retry_max_s": 0.05, "breaker_threshold": 1000}


@pytest.fixture
def openai_fake(fake_openai: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    fake_openai[0].reset()
    return fake_openai


@pytest.fixture
def anthropic_fake(fake_anthropic: tuple[FakeAnthropic, str]) -> tuple[FakeAnthropic, str]:
    fake_anthropic[0].reset()
    return fake_anthropic


@pytest.fixture
def configs(openai_fake: tuple[FakeOpenAI, str], anthropic_fake: tuple[FakeAnthropic, str]) -> list[ProviderConfig]:
    anthropic, anthropic_url = anthropic_fake
    return [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
        ProviderConfig(
            provider_id="oa", provider_type="openai_compatible", model="fake", base_url=openai_fake[1], **QUICK
        ),
        ProviderConfig(
            provider_id="claude",
            provider_type="anthropic",
            model="fake-claude",
            base_url=anthropic_url,
            api_key=SecretStr(anthropic.api_key),
            **QUICK,
        ),
    ]


def texts(requests: list[dict[str, Any]]) -> list[str]:
    """The last user message of each recorded request."""
    out = []
    for request in requests:
        message = request["body"]["messages"][-1]
        content = message["content"]
        out.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
    return out


ROWS = [{"id": f"r{i}", "prompt": f"city number {i} is Paris", "expected": "Paris"} for i in range(4)]


async def test_a_run_records_every_cell_on_echo_openai_and_anthropic(
    configs: list[ProviderConfig],
    openai_fake: tuple[FakeOpenAI, str],
    anthropic_fake: tuple[FakeAnthropic, str],
    tmp_path: Path,
) -> None:
    result = await evaluate_local(
        ROWS,
        "echo,oa,claude",
        configs,
        scorers=["contains", r"regex:number \d"],
        options=EvalOptions(repeat=2, concurrency=3),
        out=tmp_path,
        prices=PriceTable({"echo": Price(0, 0), "fake": Price(1.0, 2.0), "fake-claude": Price(3.0, 15.0)}),
    )
    assert result.called == 24 and result.reused == 0 and len(result.records) == 24
    assert len(openai_fake[0].requests) == 8 and len(anthropic_fake[0].requests) == 8
    assert all(r["status"] == "ok" and r["passed"] for r in result.records)
    by_label = {s.label: s for s in result.summaries}
    assert [s.pass_rate for s in result.summaries] == [1.0, 1.0, 1.0]
    oa = next(r for r in result.records if r["label"] == "oa")
    assert oa["output"].strip() == oa["prompt"] and oa["finish_reason"] == "stop"
    assert (oa["input_tokens"], oa["output_tokens"]) == (7, 4)  # the fake's usage chunk
    assert oa["cost"] == pytest.approx((7 * 1.0 + 4 * 2.0) / 1e6)
    assert 0 < oa["ttft_ms"] <= oa["latency_ms"]
    assert [s["name"] for s in oa["scores"]] == ["contains", "regex"]
    assert by_label["claude"].input_tokens == 8 * 11 and by_label["claude"].cost is not None
    assert all((tmp_path / name).is_file() for name in ("cells.db", "cells.jsonl", "cells.csv", "report.html"))


async def test_a_failing_cell_is_recorded_and_the_run_goes_on(configs: list[ProviderConfig], tmp_path: Path) -> None:
    result = await evaluate_local(ROWS, "echo,oa/fake-status-400,oa/fake-500", configs, out=tmp_path, prices=FREE)
    errors = [r for r in result.records if r["status"] == "error"]
    assert len(errors) == 8 and len(result.records) == 12
    bad_request = next(r for r in errors if r["model"] == "fake-status-400")
    assert bad_request["error"]["error_type"] == "invalid_request_error" and bad_request["error"]["status_code"] == 400
    assert bad_request["finish_reason"] == "error" and bad_request["passed"] is False
    server = next(r for r in errors if r["model"] == "fake-500")
    assert server["error"]["status_code"] == 502  # a provider failure, after the runtime's retries
    assert [s.errors for s in result.summaries] == [0, 4, 4]


async def test_429_storms_are_retried_with_retry_after_until_each_cell_succeeds(
    configs: list[ProviderConfig],
    openai_fake: tuple[FakeOpenAI, str],
    anthropic_fake: tuple[FakeAnthropic, str],
    tmp_path: Path,
) -> None:
    stormy = [c.model_copy(update={"max_retries": 3}) for c in configs]
    result = await evaluate_local(
        ROWS,
        "oa/fake-flaky-2,claude/fake-overloaded-flaky-2",
        stormy,
        out=tmp_path,
        prices=FREE,
        options=EvalOptions(concurrency=4),
    )
    assert all(r["status"] == "ok" for r in result.records), [r["error"] for r in result.records]
    # every cell: two refusals (429 / 529, Retry-After 20 ms), then the answer
    assert len(openai_fake[0].requests) == 3 * 4 and len(anthropic_fake[0].requests) == 3 * 4


async def test_retry_errors_calls_only_the_failed_cells(
    configs: list[ProviderConfig], openai_fake: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    fake = openai_fake[0]
    once = [c.model_copy(update={"max_retries": 1}) for c in configs]
    run = {"out": tmp_path, "prices": FREE}
    first = await evaluate_local(ROWS, "oa,oa/fake-flaky-3", once, **run)  # type: ignore[arg-type]
    assert [s.errors for s in first.summaries] == [0, 4]
    assert sum(r["body"]["model"] == "fake-flaky-3" for r in fake.requests) == 2 * 4

    fake.requests.clear()
    again = await evaluate_local(ROWS, "oa,oa/fake-flaky-3", once, **run)  # type: ignore[arg-type]
    assert again.called == 0 and fake.requests == []  # an error is a finished cell too

    retried = await evaluate_local(
        ROWS,
        "oa,oa/fake-flaky-3",
        once,
        options=EvalOptions(retry_errors=True),
        **run,  # type: ignore[arg-type]
    )
    assert retried.called == 4 and [s.errors for s in retried.summaries] == [0, 0]
    assert {r["body"]["model"] for r in fake.requests} == {"fake-flaky-3"}  # the good cells were left alone
    assert len(fake.requests) == 2 * 4  # the third refusal, then the answer


async def test_a_stopped_run_resumes_without_calling_finished_cells(
    configs: list[ProviderConfig], openai_fake: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    fake = openai_fake[0]
    rows = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(12)]
    finished = asyncio.Event()
    done: list[str] = []

    def on_cell(record: dict[str, Any]) -> None:
        done.append(record["row_id"])
        if len(done) == 5:
            finished.set()

    run = asyncio.create_task(
        evaluate_local(
            rows, "oa", configs, out=tmp_path, prices=FREE, options=EvalOptions(concurrency=2), on_cell=on_cell
        )
    )
    await asyncio.wait_for(finished.wait(), 30)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stored = ResultStore(f"sqlite:///{tmp_path / 'cells.db'}").records()
    completed = {key[0] for key in stored}
    assert len(completed) >= 5 and len(completed) < 12

    resumed = await evaluate_local(rows, "oa", configs, out=tmp_path, prices=FREE)
    assert resumed.reused == len(completed) and resumed.called == 12 - len(completed)
    calls = texts(fake.requests)
    for row_id in completed:
        assert calls.count(f"question {row_id[1:]}") == 1, row_id  # a finished cell was called once, ever
    assert sorted(r["row_id"] for r in resumed.records) == sorted(r["id"] for r in rows)


async def test_the_cost_ceiling_refuses_before_any_call(
    configs: list[ProviderConfig], openai_fake: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    prices = PriceTable({"fake": Price(input=10.0, output=30.0)})
    options = EvalOptions(max_cost=0.01, params={"max_tokens": 200})
    with pytest.raises(CostCeilingExceeded, match=r"worst case \$0\.0\d+ exceeds --max-cost \$0\.0100"):
        await evaluate_local(ROWS, "oa", configs, out=tmp_path, prices=prices, options=options)
    assert openai_fake[0].requests == []
    assert ResultStore(f"sqlite:///{tmp_path / 'cells.db'}").records() == {}
    with pytest.raises(CostCeilingExceeded, match="no price is known for claude/fake-claude"):
        await evaluate_local(ROWS, "claude", configs, out=tmp_path, prices=prices, options=options)

    forced = await evaluate_local(
        ROWS, "oa", configs, out=tmp_path, prices=prices, options=EvalOptions(max_cost=0.01, force=True)
    )
    assert forced.called == 4 and forced.estimate.total > 0.01
    assert sum(r["cost"] for r in forced.records) == pytest.approx(4 * (7 * 10 + 4 * 30) / 1e6)


async def test_changed_scorers_rescore_stored_replies_without_calling(
    configs: list[ProviderConfig], openai_fake: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    first = await evaluate_local(ROWS, "oa", configs, out=tmp_path, prices=FREE, scorers=["contains"])
    assert first.summaries[0].pass_rate == 1.0
    openai_fake[0].requests.clear()
    stricter = await evaluate_local(ROWS, "oa", configs, out=tmp_path, prices=FREE, scorers=["equals"])
    assert stricter.called == 0 and stricter.rescored == 4 and openai_fake[0].requests == []
    assert stricter.summaries[0].pass_rate == 0.0
    assert stricter.records[0]["scores"][0]["reason"].startswith("expected 'Paris'")


async def test_llm_judge_runs_on_a_chosen_provider(
    configs: list[ProviderConfig], openai_fake: tuple[FakeOpenAI, str], tmp_path: Path
) -> None:
    # The fake echoes the judge's prompt, whose last part is the reply; the verdict inside the reply is read back.
    rows = [
        {"id": "good", "prompt": 'say {"pass": true, "score": 0.9, "reason": "names the city"}'},
        {"id": "bad", "prompt": 'say {"pass": false, "score": 0.1, "reason": "wrong city"}'},
    ]
    prices = PriceTable({"echo": Price(0, 0), "fake": Price(1.0, 1.0)})
    result = await evaluate_local(
        rows, "echo", configs, out=tmp_path, prices=prices, scorers=["llm-judge:oa:The reply names the capital."]
    )
    verdicts = {r["row_id"]: r["scores"][0] for r in result.records}
    assert verdicts["good"] | {"cost": 0} == {
        "name": "llm-judge",
        "score": 0.9,
        "passed": True,
        "reason": "names the city",
        "cost": 0,
    }
    assert verdicts["bad"]["passed"] is False and verdicts["bad"]["reason"] == "wrong city"
    assert verdicts["good"]["cost"] == pytest.approx(11 / 1e6)
    judged = openai_fake[0].requests
    assert len(judged) == 2 and judged[0]["body"]["messages"][0]["role"] == "system"
    assert "Rubric:\nThe reply names the capital." in judged[0]["body"]["messages"][1]["content"]
    assert result.summaries[0].judge_cost == pytest.approx(22 / 1e6)


async def test_results_live_in_postgres_too(configs: list[ProviderConfig], fresh_pg_url: str, tmp_path: Path) -> None:
    first = await evaluate_local(ROWS, "echo", configs, out=tmp_path, prices=FREE, results_url=fresh_pg_url)
    again = await evaluate_local(ROWS, "echo", configs, out=tmp_path, prices=FREE, results_url=fresh_pg_url)
    assert (first.called, again.called, again.reused) == (4, 0, 4)
    assert [r["output"] for r in again.records] == [r["output"] for r in first.records]
    assert not (tmp_path / "cells.db").exists()


async def test_limited_providers_draw_from_the_buckets_and_settle_with_real_usage(
    configs: list[ProviderConfig], tmp_path: Path
) -> None:
    limits = ProviderRateLimits(clock=lambda: 0.0)  # time stands still: the bucket holds exactly what was drawn
    store = ResultStore(f"sqlite:///{tmp_path / 'cells.db'}")
    evaluation = Evaluation(
        parse_rows(ROWS),
        [Candidate("echo", "echo", "echo")],
        store=store,
        complete=RuntimeReplies(configs),
        limiter=LocalProviderLimiter(limits),
        options=EvalOptions(tpm={"echo": 6000}, rpm={"echo": 6000}, params={"max_tokens": 50}),
        prices=FREE,
    )
    result = await evaluation.run()
    assert [r["input_tokens"] + r["output_tokens"] for r in result.records] == [10] * 4
    snapshot = limits.snapshot()["echo"]
    # each call reserved ~60 tokens; the runner settled every one with the 10 the reply reported
    assert snapshot["granted"] == 4 and snapshot["tokens_available"] == 1000 - 4 * 10
    assert snapshot["requests_available"] == 1000 - 4
