"""``relay eval`` on the shared Ray cluster: cells through the provider pools, 429 storms, resume, the cost
ceiling, the cluster-wide rate limiter, and the command line as a user runs it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import ray
import yaml
from ray import serve

from actors.evaluation import ClusterProviderLimiter, PoolReplies, aevaluate, ensure_pools, rate_limiter, served_pools
from actors.names import PoolAddress, pool_name
from actors.pools import PoolHandles
from relay.config import ProviderConfig, RelaySettings
from relay.errors import InvalidRequest
from relay.evaluation import CostCeilingExceeded, EvalOptions, Price, PriceTable, ResultStore
from relay.request import ChatRequest
from tests.integration.conftest import ROOT, Relay

pytestmark = pytest.mark.integration

FREE = PriceTable({"echo": Price(0, 0), "fake": Price(0, 0), "fake-claude": Price(0, 0)})
# Fast retries and a breaker that stays closed: the tests count every upstream request.
RETRIES = {"max_retries": 5, "retry_base_s": 0.01, "retry_max_s": 0.05, "breaker_threshold": 1000}


@pytest.fixture(scope="module")
def settings(relay: Relay) -> Iterator[RelaySettings]:
    """Three pools of the evaluation's own, each a Serve app beside the relay app, deployed once."""
    configs = [
        ProviderConfig(provider_id="ev-echo", provider_type="echo", model="echo", options={"ttft_ms": 5}),
        ProviderConfig(
            provider_id="ev-oa", provider_type="openai_compatible", model="fake", base_url=relay.upstream_url, **RETRIES
        ),
        ProviderConfig(
            provider_id="ev-claude",
            provider_type="anthropic",
            model="fake-claude",
            base_url=relay.anthropic_url,
            api_key_env="RELAY_TEST_ANTHROPIC_KEY",
            **RETRIES,
        ),
    ]
    settings = RelaySettings(providers=configs)
    _, deployed = ensure_pools([c.provider_id for c in configs], configs, settings)
    yield settings
    for app in deployed:
        serve.delete(app)


@pytest.fixture
def fakes(relay: Relay) -> Relay:
    relay.upstream.reset()
    relay.anthropic.reset()
    return relay


def rows(count: int, prefix: str = "row") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{i}", "prompt": f"{prefix} {i} mentions Paris", "expected": "Paris"} for i in range(count)]


def user_texts(requests: list[dict[str, Any]]) -> list[str]:
    out = []
    for request in requests:
        content = request["body"]["messages"][-1]["content"]
        out.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
    return out


async def pool_calls(provider: str) -> tuple[int, int]:
    """(calls, of which whole replies) the provider's dedicated pool has served."""
    app = {"ev-echo": "relay-provider-ev-echo", "ev-oa": "relay-provider-ev-oa"}[provider]
    stats = await serve.get_deployment_handle(pool_name(provider), app_name=app).stats.remote()
    return int(stats["requests"]), int(stats["replies"])


async def test_cells_run_through_the_pools_on_echo_openai_and_anthropic(
    settings: RelaySettings, fakes: Relay, tmp_path: Path
) -> None:
    before = await pool_calls("ev-oa")
    dataset = [*rows(5), {"id": "odd", "prompt": "no capital here", "expected": "Paris"}]
    result = await aevaluate(
        dataset,
        "ev-echo,ev-oa,ev-claude",
        settings=settings,
        scorers=["contains", r"regex:\d"],
        options=EvalOptions(repeat=2, concurrency=4, fail_under=1.0),
        out=tmp_path,
        prices=FREE,
    )
    assert result.called == 36 and all(r["status"] == "ok" for r in result.records)
    assert len(fakes.upstream.requests) == 12 and len(fakes.anthropic.requests) == 12
    after = await pool_calls("ev-oa")
    # The cells went through the pool, not a session, each as one whole reply.
    assert (after[0] - before[0], after[1] - before[1]) == (12, 12)
    claude = next(r for r in result.records if r["label"] == "ev-claude" and r["row_id"] == "row1")
    assert claude["output"] == "row 1 mentions Paris" and claude["finish_reason"] == "stop"
    assert claude["input_tokens"] == 11 and claude["ttft_ms"] is not None and claude["latency_ms"] > 0
    assert [round(s.pass_rate, 3) for s in result.summaries] == [round(10 / 12, 3)] * 3
    assert result.exit_code == 1 and [s.label for s in result.failing] == ["ev-echo", "ev-oa", "ev-claude"]
    html = (tmp_path / "report.html").read_text()
    assert 'id="chart-latency"' in html and 'data-row="odd"' in html


async def test_cells_on_the_shared_pool_come_back_whole_with_exact_texts_and_the_pools_timing(
    fakes: Relay, tmp_path: Path
) -> None:
    """Two providers of the relay app's shared pool: ``up`` (configured, the OpenAI fake) and ``ev-paced``
    (registered: an echo that waits 80 ms, then sends 40 words a second). Each cell is one ``complete`` call."""
    paced = {"ttft_ms": 80, "tokens_per_s": 40}
    async with httpx.AsyncClient(base_url=fakes.url, timeout=120) as http:
        body = {"provider_id": "ev-paced", "provider_type": "echo", "model_name": "echo", "options": paced}
        created = await http.post("/api/streaming/providers/register", json=body)
        assert created.status_code == 201, created.text
        try:
            served = await served_pools()
            assert all(PoolAddress.of(served[p], p).shared for p in ("ev-paced", "up"))
            handles = PoolHandles()
            before = [(await handles.stats(served[p], p))["replies"] for p in ("ev-paced", "up")]
            configs = [
                ProviderConfig(provider_id="ev-paced", provider_type="echo", model="echo", options=paced),
                ProviderConfig(
                    provider_id="up", provider_type="openai_compatible", model="fake", base_url=fakes.upstream_url
                ),
            ]
            result = await aevaluate(
                rows(4, "shared"),
                "ev-paced,up,up/fake-status-400",
                settings=RelaySettings(providers=configs),
                out=tmp_path,
                prices=FREE,
            )
            after = [(await handles.stats(served[p], p))["replies"] for p in ("ev-paced", "up")]
            with pytest.raises(InvalidRequest) as refused:  # the pool's own error, not Ray's wrapper of it
                await PoolReplies(served)(ChatRequest("up", [{"role": "user", "content": "hi"}], "fake-status-400"))
        finally:
            assert (await http.delete("/api/streaming/providers/ev-paced")).status_code == 200
    assert [after[0] - before[0], after[1] - before[1]] == [4, 8]
    assert type(refused.value) is InvalidRequest and refused.value.status_code == 400
    by_label: dict[str, list[dict[str, Any]]] = {}
    for record in result.records:
        by_label.setdefault(record["label"], []).append(record)
    # The echo sends the prompt back as it came; the OpenAI fake sends each word with a trailing space.
    assert [r["output"] for r in by_label["ev-paced"]] == [f"shared {i} mentions Paris" for i in range(4)]
    assert [r["output"] for r in by_label["up"]] == [f"shared {i} mentions Paris " for i in range(4)]
    for record in by_label["ev-paced"]:  # timed in the pool around the upstream: never under the echo's pace
        assert record["ttft_ms"] >= 80 and record["latency_ms"] >= 80 + 3 / 40 * 1000
        assert record["finish_reason"] == "stop" and record["output_tokens"] == 4
    for record in by_label["up"]:
        assert 0 < record["ttft_ms"] <= record["latency_ms"]
        assert (record["input_tokens"], record["output_tokens"]) == (7, 4)
    failed = by_label["up/fake-status-400"]
    assert [(r["status"], r["error"]["error_type"], r["error"]["status_code"]) for r in failed] == [
        ("error", "invalid_request_error", 400)
    ] * 4


async def test_llm_judge_calls_its_provider_through_the_pool(
    settings: RelaySettings, fakes: Relay, tmp_path: Path
) -> None:
    # The fake OpenAI echoes the judge's prompt, whose last part is the reply: the verdict inside it is read back.
    dataset = [
        {"id": "good", "prompt": 'say {"pass": true, "score": 1, "reason": "right city"}'},
        {"id": "bad", "prompt": 'say {"pass": false, "score": 0, "reason": "wrong city"}'},
    ]
    result = await aevaluate(
        dataset,
        "ev-echo",
        settings=settings,
        scorers=["llm-judge:ev-oa:The reply names the capital."],
        out=tmp_path,
        prices=FREE,
    )
    verdicts = {r["row_id"]: (r["passed"], r["scores"][0]["reason"]) for r in result.records}
    assert verdicts == {"good": (True, "right city"), "bad": (False, "wrong city")}
    assert len(fakes.upstream.requests) == 2
    assert fakes.upstream.requests[0]["body"]["messages"][0]["role"] == "system"


async def test_a_429_storm_is_ridden_out_on_both_wire_formats(
    settings: RelaySettings, fakes: Relay, tmp_path: Path
) -> None:
    result = await aevaluate(
        rows(6, "storm"),
        "ev-oa/fake-flaky-3,ev-claude/fake-flaky-3",
        settings=settings,
        options=EvalOptions(concurrency=6),
        out=tmp_path,
        prices=FREE,
    )
    assert [r["error"] for r in result.records if r["error"]] == []
    # three 429s (Retry-After 20 ms) then the answer, for each of the 6 cells of each provider
    assert len(fakes.upstream.requests) == 4 * 6 and len(fakes.anthropic.requests) == 4 * 6


async def test_a_stopped_run_resumes_and_calls_no_finished_cell_again(
    settings: RelaySettings, fakes: Relay, tmp_path: Path
) -> None:
    dataset = rows(16, "resume")
    finished = asyncio.Event()
    done: list[str] = []

    def on_cell(record: dict[str, Any]) -> None:
        done.append(record["row_id"])
        if len(done) == 6:
            finished.set()

    run = asyncio.create_task(
        aevaluate(
            dataset,
            "ev-oa",
            settings=settings,
            options=EvalOptions(concurrency=2),
            out=tmp_path,
            prices=FREE,
            on_cell=on_cell,
        )
    )
    await asyncio.wait_for(finished.wait(), 120)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    completed = {key[0] for key in ResultStore(f"sqlite:///{tmp_path / 'cells.db'}").records()}
    assert 6 <= len(completed) < 16

    resumed = await aevaluate(dataset, "ev-oa", settings=settings, out=tmp_path, prices=FREE)
    assert resumed.reused == len(completed) and resumed.called == 16 - len(completed)
    calls = user_texts(fakes.upstream.requests)
    for row_id in completed:
        assert calls.count(f"resume {row_id.removeprefix('resume')} mentions Paris") == 1, row_id
    assert sorted(r["row_id"] for r in resumed.records) == sorted(r["id"] for r in dataset)
    assert all(r["status"] == "ok" for r in resumed.records)


async def test_retry_errors_reruns_only_the_failed_cells(settings: RelaySettings, fakes: Relay, tmp_path: Path) -> None:
    dataset = rows(4, "flaky")
    run = {"settings": settings, "out": tmp_path, "prices": FREE}
    first = await aevaluate(dataset, "ev-oa,ev-oa/fake-flaky-7", **run)  # type: ignore[arg-type]
    assert [s.errors for s in first.summaries] == [0, 4]
    failed = next(r for r in first.records if r["status"] == "error")
    assert failed["error"]["error_type"] == "rate_limit_error" and failed["error"]["status_code"] == 429
    assert len(fakes.upstream.requests) == 4 + 6 * 4  # six attempts per failing cell: 1 + max_retries

    fakes.upstream.requests.clear()  # the flaky counts stay: each cell has had six 429s
    retried = await aevaluate(dataset, "ev-oa,ev-oa/fake-flaky-7", options=EvalOptions(retry_errors=True), **run)  # type: ignore[arg-type]
    assert retried.called == 4 and [s.errors for s in retried.summaries] == [0, 0]
    assert {r["body"]["model"] for r in fakes.upstream.requests} == {"fake-flaky-7"}
    assert len(fakes.upstream.requests) == 2 * 4  # the seventh 429, then the answer


async def test_the_cost_ceiling_refuses_before_any_call(settings: RelaySettings, fakes: Relay, tmp_path: Path) -> None:
    prices = PriceTable({"fake": Price(input=5.0, output=15.0)})
    with pytest.raises(CostCeilingExceeded, match=r"exceeds --max-cost \$0\.0010"):
        await aevaluate(
            rows(10),
            "ev-oa",
            settings=settings,
            options=EvalOptions(max_cost=0.001, params={"max_tokens": 100}),
            out=tmp_path,
            prices=prices,
        )
    assert fakes.upstream.requests == []
    assert ResultStore(f"sqlite:///{tmp_path / 'cells.db'}").records() == {}


@ray.remote(num_cpus=0)
def reserve_elsewhere(provider: str) -> float:
    """A reservation from another process, as a second driver or a worker on another node would make."""
    return float(ray.get(rate_limiter().reserve.remote(provider, 0)))


async def test_the_rate_limiter_is_one_actor_for_the_cluster() -> None:
    limiter = ClusterProviderLimiter()
    # A bucket of one request, refilled once every 1,000 s: what elapses while a worker starts hardly counts.
    await limiter.configure("ev-shared", rpm=0.06, tpm=None)
    assert await limiter.reserve("ev-shared", 0) == 0.0
    elsewhere = await reserve_elsewhere.remote("ev-shared")
    assert elsewhere == pytest.approx(1000.0, abs=60)
    assert await limiter.reserve("ev-shared", 0) == pytest.approx(2000.0, abs=60)
    snapshot = await rate_limiter().snapshot.remote()
    assert snapshot["ev-shared"]["granted"] == 3 and snapshot["ev-shared"]["rpm"] == 0.06
    await limiter.configure("ev-shared", rpm=None, tpm=None)


def relay_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "eval", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_relay_eval_on_the_running_cluster(settings: RelaySettings, fakes: Relay, tmp_path: Path) -> None:
    providers = [p.model_dump(mode="json", exclude_defaults=True) for p in settings.providers]
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"applications": [{"name": "relay", "args": {"providers": providers}}]}))
    dataset = tmp_path / "capitals.jsonl"
    dataset.write_bytes(b"\n".join(orjson.dumps(row) for row in [*rows(3, "cli"), {"prompt": "x", "expected": "y"}]))
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        yaml.safe_dump({"prices": {"echo": {"input": 0, "output": 0}, "fake": {"input": 1, "output": 1}}})
    )
    common = ["--providers", "ev-echo,ev-oa", "--config", str(config), "--prices", str(prices)]
    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "out"
    run = [str(dataset), *common, "--out", str(out), "--address", address, "--scorer", "contains", "--no-progress"]

    refused = relay_eval(*run, "--max-cost", "0.000001", "--max-tokens", "50", cwd=ROOT)
    assert refused.returncode == 3 and "refusing to start" in refused.stderr and fakes.upstream.requests == []

    done = relay_eval(*run, "--fail-under", "90%", cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:]  # 3 of 4 rows pass: 75 % < 90 %
    assert "8 cells called, 0 reused" in done.stdout and "FAIL: ev-oa passed 75.0% < 90.0%" in done.stderr
    table = done.stdout.splitlines()
    assert table[0].split()[:3] == ["provider", "cells", "errors"] and table[2].split()[:4] == [
        "ev-echo",
        "4",
        "0",
        "75.0%",
    ]
    assert len(fakes.upstream.requests) == 4 and (out / "report.html").is_file() and (out / "cells.csv").is_file()

    again = relay_eval(*run, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 cells called, 8 reused" in again.stdout and len(fakes.upstream.requests) == 4

    unknown = relay_eval(str(dataset), "--providers", "nope", "--config", str(config), cwd=ROOT)
    assert unknown.returncode == 2 and "unknown provider 'nope'" in unknown.stderr
