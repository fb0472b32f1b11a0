"""The web playground in headless Chromium (Debian's, driven by playwright; no browser download) through Serve."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.conftest import ROOT, Relay

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "artifacts"
WAIT_MS = 60_000  # a deadline on events arriving through a loaded 2-core machine, never a pace


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: apt-get install chromium"
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        yield launched
        await launched.close()
    expect.set_options(timeout=None)  # back to playwright's default for any other browser test


async def choose(page: Page, *providers: str, model: str = "", options: str = "") -> None:
    """Tick exactly ``providers`` and set the model and provider-options fields."""
    for box in await page.locator("#providers input:enabled").all():
        await box.set_checked(await box.get_attribute("value") in providers)
    await page.get_by_test_id("model").fill(model)
    await page.get_by_test_id("provider-options").fill(options)


async def send(page: Page, text: str) -> None:
    await page.get_by_test_id("prompt").fill(text)
    await page.get_by_test_id("send").click()


async def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for path in (ARTIFACTS / name, tmp_path / name):
        await page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")


async def test_playground_streams_cancels_reopens_and_compares(
    relay: Relay, browser: Browser, tmp_path: Path
) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}"
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    await page.add_init_script(f"localStorage.setItem('relay.user', {json.dumps(user)})")
    await page.goto(relay.url + "/")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    await expect(page.get_by_test_id("user-id")).to_have_value(user)
    await expect(page.get_by_test_id("provider-echo")).to_be_enabled()
    await expect(page.get_by_test_id("provider-mystery")).to_be_disabled()  # configured, but no adapter
    last = page.get_by_test_id("assistant").last

    # An echo turn in chunked mode: the streamed text is the prompt, and the page learns its new session.
    await choose(page, "echo")
    await page.get_by_test_id("mode").select_option("chunked")
    await send(page, "hello from chromium")
    await expect(last).to_have_attribute("data-state", "done")
    await expect(last.get_by_test_id("assistant-text")).to_have_text("hello from chromium")
    await expect(last.get_by_test_id("run-status")).to_contain_text("echo · stop · 3 tokens")
    label = page.get_by_test_id("session-label")
    await expect(label).to_have_attribute("data-session-id", re.compile(r"^sess"))
    sid = await label.get_attribute("data-session-id")
    assert sid
    item = page.locator(f'[data-testid="session-item"][data-session-id="{sid}"]')
    await expect(item.locator(".title")).to_have_text("hello from chromium")  # named after its first message

    # Echo stops after two tokens and hangs: the partial text is on screen while the run is live; Cancel ends it.
    # (Standard mode: chunked would hold two short tokens back until its 16-character chunk fills.)
    await page.get_by_test_id("mode").select_option("standard")
    await choose(page, "echo", options='{"fault": "hang", "fault_after": 2}')
    await send(page, "a b c d e f")
    await expect(last.get_by_test_id("assistant-text")).to_have_text("a b")
    await expect(last).to_have_attribute("data-state", "streaming")
    await expect(page.get_by_test_id("send")).to_be_disabled()
    await page.get_by_test_id("cancel").click()
    await expect(last).to_have_attribute("data-state", "cancelled")
    await expect(last.get_by_test_id("run-status")).to_have_text("echo · cancelled")
    await expect(page.get_by_test_id("cancel")).to_be_disabled()

    # Reopen the session from the sidebar: its history comes back, and the next message continues it.
    await page.get_by_test_id("new-chat").click()
    await expect(label).to_have_text("New session")
    await expect(page.get_by_test_id("assistant")).to_have_count(0)
    await item.click()
    await expect(label).to_have_attribute("data-session-id", sid)
    await expect(page.locator(".msg.user")).to_have_text(["hello from chromium", "a b c d e f"])
    await choose(page, "echo")
    await send(page, "after cancel")
    await expect(last).to_have_attribute("data-state", "done")
    await expect(last.get_by_test_id("assistant-text")).to_have_text("after cancel")
    # That turn waited for the session's turn lock, so the cancelled run is stored by now.
    async with httpx.AsyncClient(base_url=relay.url, headers={"X-User-Id": user}, timeout=60) as http:
        runs = (await http.get(f"/api/sessions/{sid}/runs")).json()["runs"]
        messages = (await http.get(f"/api/sessions/{sid}/messages")).json()["messages"]
    assert [(run["status"], run["output"]) for run in runs] == [
        ("completed", "hello from chromium"),
        ("cancelled", "a b "),
        ("completed", "after cancel"),
    ]
    asked = [m["content"] for m in messages if m["role"] == "user"]
    assert asked == ["hello from chromium", "a b c d e f", "after cancel"]

    # Reopened again, the stored partial reply says it was cancelled.
    await page.get_by_test_id("new-chat").click()
    await item.click()
    cancelled = page.locator('[data-testid="assistant"][data-state="cancelled"]')
    await expect(cancelled.get_by_test_id("assistant-text")).to_have_text("a b")
    await expect(cancelled.get_by_test_id("run-status")).to_have_text("echo · cancelled")
    await expect(page.get_by_test_id("provider-echo")).to_be_checked()  # the provider of the session's last run

    # Another provider in the same session: a tool call streams in as name and arguments.
    await choose(page, "up", model="fake-tools")
    await send(page, "weather in Paris?")
    await expect(last).to_have_attribute("data-finish", "tool_calls")
    call = last.get_by_test_id("tool-call")
    await expect(call.locator(".tool-name")).to_have_text("get_weather")
    assert json.loads(await call.locator(".tool-args").inner_text()) == {"city": "Paris"}
    await screenshot(page, "playground.png", tmp_path)

    # Two providers compare side by side (interleaved): one column each; the reasoning lands in its own column.
    await choose(page, "echo", "up", model="fake-reasoning")
    await expect(page.get_by_test_id("mode")).to_have_value("interleaved")
    await send(page, "side by side")
    columns = page.get_by_test_id("column")
    await expect(columns).to_have_count(2)
    echo, up = (page.locator(f'[data-testid="column"][data-provider="{p}"]') for p in ("echo", "up"))
    await expect(echo.get_by_test_id("assistant")).to_have_attribute("data-state", "done")
    await expect(up.get_by_test_id("assistant")).to_have_attribute("data-state", "done")
    await expect(echo.get_by_test_id("assistant-text")).to_have_text("side by side")
    await expect(up.get_by_test_id("assistant-text")).to_have_text("side by side")
    await expect(up.locator(".reasoning-text")).to_have_text("think more")
    await expect(echo.get_by_test_id("reasoning")).to_be_hidden()
    base = await label.get_attribute("data-session-id")
    assert base and base.startswith("cmp_")
    await screenshot(page, "playground-compare.png", tmp_path)

    # The comparison is one entry in the sidebar, and reopening it brings back both columns.
    await page.get_by_test_id("new-chat").click()
    await page.locator(f'[data-testid="session-item"][data-session-id="{base}"]').click()
    await expect(columns).to_have_count(2)
    await expect(page.locator('[data-testid="column"][data-provider="up"] .msg.user')).to_have_text(["side by side"])
    await expect(page.get_by_test_id("provider-up")).to_be_checked()

    # An upstream refusal is shown on its reply, and the page is ready for the next message.
    await page.get_by_test_id("new-chat").click()
    await choose(page, "up", model="fake-status-400")
    await send(page, "this one fails")
    await expect(last).to_have_attribute("data-state", "error")
    await expect(last.get_by_test_id("note-error")).to_contain_text("the fake was told to answer 400")
    await expect(page.get_by_test_id("send")).to_be_enabled()
    assert problems == [], problems


async def test_a_conversation_from_the_api_is_a_session_in_the_sidebar(relay: Relay, browser: Browser) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=relay.url, headers={"X-User-Id": user}, timeout=60) as http:
        items = [{"role": "user", "content": "remember blue"}]
        conversation = (await http.post("/v1/conversations", json={"items": items})).json()["id"]
        answer = {"model": "echo", "input": "what colour?", "conversation": conversation}
        assert (await http.post("/v1/responses", json=answer)).json()["status"] == "completed"
    page = await browser.new_page()
    await page.add_init_script(f"localStorage.setItem('relay.user', {json.dumps(user)})")
    await page.goto(relay.url + "/")
    item = page.locator(f'[data-testid="session-item"][data-session-id="{conversation}"]')
    await item.click()
    await expect(page.get_by_test_id("session-label")).to_have_attribute("data-session-id", conversation)
    await expect(page.locator(".msg.user")).to_have_text(["remember blue", "what colour?"])
    await expect(page.get_by_test_id("assistant-text")).to_have_text(["what colour?"])
