"""The HTML report opened from disk in headless Chromium: self-contained, its charts drawn, its filter working."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from playwright.async_api import Browser, async_playwright

from relay.config import ProviderConfig
from relay.evaluation import EvalOptions, Price, PriceTable
from relay.evaluation.api import evaluate_local
from relay.evaluation.export import write_parquet

CONFIGS = [
    ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
    ProviderConfig(provider_id="slow", provider_type="echo", model="echo-slow", options={"ttft_ms": 30}),
    # fails on the fourth token: short prompts pass, the long one errors
    ProviderConfig(
        provider_id="faulty", provider_type="echo", model="echo", options={"fault": "error", "fault_after": 3}
    ),
]
ROWS = [
    {"id": "short", "prompt": "Paris", "expected": "Paris"},
    {"id": "miss", "prompt": "Lyon is big", "expected": "Nice"},
    {"id": "long", "prompt": "the capital is Rome today", "expected": "Rome"},
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: apt-get install chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def report(tmp_path: Path) -> Path:
    prices = PriceTable({"echo": Price(1.0, 2.0), "echo-slow": Price(4.0, 8.0)})
    result = await evaluate_local(
        ROWS,
        "echo,slow,faulty",
        CONFIGS,
        scorers=["contains"],
        options=EvalOptions(repeat=2),
        out=tmp_path,
        prices=prices,
    )
    assert [s.errors for s in result.summaries] == [0, 0, 2]
    return tmp_path / "report.html"


async def test_report_renders_its_charts_offline(report: Path, browser: Browser) -> None:
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(report.as_uri())
    assert requests == [report.as_uri()] and errors == []  # nothing fetched: no CDN, no font, no script

    bars = page.locator("#chart-pass-rate rect.bar")
    assert await bars.count() == 3
    widths = {}
    for index in range(3):
        bar = bars.nth(index)
        box = await bar.bounding_box()
        assert box is not None
        widths[await bar.get_attribute("data-label")] = box["width"]
    # echo and slow pass 4 of 6 cells; faulty 2 of 6 (its long row errors): drawn to scale
    assert widths["echo"] == pytest.approx(widths["slow"]) and widths["echo"] > 0
    assert widths["faulty"] == pytest.approx(widths["echo"] / 2, abs=1)

    boxes = page.locator("#chart-latency g.box")
    assert await boxes.count() == 3
    for index in range(3):
        shape = await boxes.nth(index).bounding_box()
        assert shape is not None and shape["width"] > 0 and shape["height"] > 0
    slow_median = float(await page.locator('#chart-ttft g.box[data-label="slow"]').get_attribute("data-value") or 0)
    echo_median = float(await page.locator('#chart-ttft g.box[data-label="echo"]').get_attribute("data-value") or 0)
    assert slow_median >= 30 > echo_median

    cost = page.locator("#chart-cost rect.bar")
    assert await cost.count() == 3
    slow_cost = await page.locator('#chart-cost rect.bar[data-label="slow"]').bounding_box()
    echo_cost = await page.locator('#chart-cost rect.bar[data-label="echo"]').bounding_box()
    assert slow_cost and echo_cost and slow_cost["width"] == pytest.approx(4 * echo_cost["width"], rel=0.02)

    assert await page.locator("#summary tbody tr").count() == 3
    assert await page.locator("#matrix thead th").all_inner_texts() == [
        "row",
        "input",
        "expected",
        "echo",
        "slow",
        "faulty",
    ]
    long_row = page.locator('#matrix tr[data-row="long"] td.cell')
    assert [await long_row.nth(i).get_attribute("data-state") for i in range(3)] == ["pass", "pass", "error"]
    assert "✗ 0/2" in await long_row.nth(2).inner_text()

    await page.locator("#only-failing").check()
    visible = [await row.get_attribute("data-row") for row in await page.locator("#matrix tbody tr:visible").all()]
    assert visible == ["miss", "long"]


async def test_cells_export_as_jsonl_and_csv(report: Path) -> None:
    folder = report.parent
    lines = [orjson.loads(line) for line in (folder / "cells.jsonl").read_bytes().splitlines()]
    assert len(lines) == 18 and {line["label"] for line in lines} == {"echo", "slow", "faulty"}
    errored = next(line for line in lines if line["status"] == "error")
    assert errored["error"]["error_type"] == "provider_error" and errored["scores"] == []
    header, *rows = (folder / "cells.csv").read_text().splitlines()
    assert header.startswith("row_id,provider,model,repeat,config_hash,label,status") and len(rows) == 18
    summary = orjson.loads((folder / "summary.json").read_bytes())
    assert [s["label"] for s in summary] == ["echo", "slow", "faulty"] and summary[2]["errors"] == 2
    # Parquet is written when pyarrow is importable, and skipped quietly when it is not
    written = write_parquet(lines, folder / "cells.parquet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert written is None and not (folder / "cells.parquet").exists()
    else:
        assert written is not None and pq.read_table(written).num_rows == 18
