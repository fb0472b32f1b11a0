"""Resumable streams: drop the connection mid-stream, resume with Last-Event-ID, get exactly the rest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread

WORDS = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = Path(tmp_path_factory.mktemp("resume")) / "relay.db"
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    with ServerThread(build_app(LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=[echo])))) as s:
        yield s.url


def sse(lines: list[str]) -> list[dict[str, Any]]:
    """Events of an SSE body; the ``id:`` line of each must be the id its data carries."""
    events, current_id = [], None
    for line in lines:
        if line.startswith("id: "):
            current_id = line[4:]
        elif line.startswith("data: "):
            event = orjson.loads(line[6:])
            assert current_id == (str(event["id"]) if "id" in event else None)
            events.append(event)
        elif line == "":
            current_id = None
    return events


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text-delta")


async def drop_mid_stream(
    http: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> tuple[str, int | str, str]:
    """Start a resumable run, read a few text events, then cut the connection: (run_id, last id, text so far)."""
    body = {
        "resumable": True,
        "provider_options": {"tokens_per_s": 60},
        "messages": [{"role": "user", "content": WORDS}],
    } | fields
    lines: list[str] = []
    async with http.stream("POST", "/api/streaming/chat", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "" and sum(e["type"] == "text-delta" for e in sse(lines)) >= 5:
                break
    events = sse(lines)
    run_id = next(e["run_id"] for e in events if e["type"] == "status" and e["status"] == "started")
    return run_id, events[-1]["id"], text(events)


async def rest_of(
    http: httpx.AsyncClient, run_id: str, last_id: int | str, owner: dict[str, str]
) -> list[dict[str, Any]]:
    async with http.stream(
        "GET", f"/api/streaming/runs/{run_id}/events", headers=owner | {"Last-Event-ID": str(last_id)}
    ) as response:
        assert response.status_code == 200
        return sse([line async for line in response.aiter_lines()])


async def test_resume_after_a_dropped_connection_gives_exactly_the_rest(url: str) -> None:
    owner = {"X-User-Id": "resumer"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        run_id, last_id, before = await drop_mid_stream(http, owner)
        assert isinstance(last_id, int)
        rest = await rest_of(http, run_id, last_id, owner)
        assert [e["id"] for e in rest] == list(range(last_id + 1, last_id + 1 + len(rest)))  # no gap, no repeat
        assert rest[-1]["type"] == "finish" and rest[-1]["reason"] == "stop"
        assert before + "".join(e["content"] for e in rest if e["type"] == "text-delta") == WORDS

        replay = await http.get(f"/api/streaming/runs/{run_id}/events?after=0", headers=owner)
        events = sse(replay.text.splitlines())
        assert "".join(e["content"] for e in events if e["type"] == "text-delta") == WORDS
        assert events[0]["id"] == 1 and events[-1]["type"] == "finish"
        other = await http.get(f"/api/streaming/runs/{run_id}/events", headers={"X-User-Id": "someone-else"})
        assert other.status_code == 404 and other.json()["error"]["param"] == "run_id"
        bad = await http.get(f"/api/streaming/runs/{run_id}/events", headers=owner | {"Last-Event-ID": "x"})
        assert bad.status_code == 400


async def test_a_dropped_connection_without_resumable_still_cancels(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        body = {"provider_options": {"tokens_per_s": 60}, "messages": [{"role": "user", "content": WORDS}]}
        async with http.stream("POST", "/api/streaming/chat", json=body) as response:
            session_id = response.headers["x-session-id"]
            async for line in response.aiter_lines():
                if line.startswith("data: ") and orjson.loads(line[6:])["type"] == "text-delta":
                    break
        runs = (await http.get(f"/api/sessions/{session_id}/runs")).json()["runs"]
        while runs[0]["status"] == "running":  # the server notices the disconnect on its own schedule
            runs = (await http.get(f"/api/sessions/{session_id}/runs")).json()["runs"]
        assert runs[0]["status"] == "cancelled" and runs[0]["output"] != WORDS


@pytest.mark.parametrize(
    "mode",
    [
        {"generator_mode": "buffered", "buffer_size": 24, "flush_interval": 5},
        {"generator_mode": "chunked", "chunk_size": 7},
        {"generator_mode": "priority"},
    ],
    ids=lambda mode: mode["generator_mode"],
)
async def test_every_mode_streams_ids_that_resume_exactly(url: str, mode: dict[str, Any]) -> None:
    owner = {"X-User-Id": f"resumer-{mode['generator_mode']}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        run_id, last_id, before = await drop_mid_stream(http, owner, **mode)
        rest = await rest_of(http, run_id, last_id, owner)
        assert rest[-1]["type"] == "finish" and rest[-1]["reason"] == "stop"
        assert before + text(rest) == WORDS

        whole = await http.post("/api/streaming/chat", json=mode | {"messages": [{"role": "user", "content": WORDS}]})
    events = sse(whole.text.splitlines())
    pieces = [e["content"] for e in events if e["type"] == "text-delta"]
    assert "".join(pieces) == WORDS and events[-1]["type"] == "finish" and events[-1]["id"] == len(WORDS.split()) + 3
    if mode["generator_mode"] == "buffered":  # held to 24 bytes (or the end), so fewer, larger pieces than words
        assert len(pieces) < len(WORDS.split()) and all(len(p) >= 24 for p in pieces[:-1])
    if mode["generator_mode"] == "chunked":
        assert {len(p) for p in pieces[:-1]} == {7}
