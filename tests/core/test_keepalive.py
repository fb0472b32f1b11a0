"""Keep-alive lines on silent streams: on every SSE wire, read through by the real clients; a failed one disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from starlette.requests import ClientDisconnect

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.keepalive import ANTHROPIC_PING, SSE_COMMENT, KeepAliveResponse
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread

TEXT = "keep this line alive"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An echo that pauses 200 ms before each word, and keep-alives after 50 ms of silence."""
    path = Path(tmp_path_factory.mktemp("keepalive")) / "relay.db"
    slow = ProviderConfig(provider_id="slow", provider_type="echo", model="echo", options={"tokens_per_s": 5})
    settings = RelaySettings(store_url=f"sqlite:///{path}", providers=[slow], stream_keepalive_s=0.05)
    with ServerThread(build_app(LocalBackend(settings))) as running:
        yield running.url


async def raw(server: str, path: str, body: dict[str, Any]) -> str:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        response = await http.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    return response.text


async def test_typed_sse_gets_comments_between_whole_events(server: str) -> None:
    body = {"provider_id": "slow", "messages": [{"role": "user", "content": TEXT}]}
    text = await raw(server, "/api/streaming/chat", body)
    assert text.count(SSE_COMMENT.decode()) >= 3  # four 200 ms pauses, 50 ms keep-alives
    events = []
    for block in text.replace(SSE_COMMENT.decode(), "").strip().split("\n\n"):  # what is left parses whole
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append(orjson.loads(fields["data"]))
    assert "".join(e["content"] for e in events if e["type"] == "text-delta").strip() == TEXT
    assert events[-1]["type"] == "finish"


async def test_the_openai_sdk_reads_through_them(server: str) -> None:
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": TEXT}]}
    assert SSE_COMMENT.decode() in await raw(server, "/v1/chat/completions", body)
    client = openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)
    stream = await client.chat.completions.create(model="slow", stream=True, messages=body["messages"])
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text.strip() == TEXT


async def test_the_responses_stream_reads_through_them(server: str) -> None:
    assert SSE_COMMENT.decode() in await raw(server, "/v1/responses", {"model": "slow", "input": TEXT, "stream": True})
    client = openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)
    stream = await client.responses.create(model="slow", input=TEXT, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds


async def test_the_anthropic_wire_gets_its_own_ping_event(server: str) -> None:
    body = {"model": "slow", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": TEXT}]}
    text = await raw(server, "/v1/messages", body)
    assert ANTHROPIC_PING.decode() in text and SSE_COMMENT.decode() not in text
    client = anthropic.AsyncAnthropic(api_key="unused", base_url=server, max_retries=0)
    async with client.messages.stream(model="slow", max_tokens=64, messages=body["messages"]) as stream:
        final = await stream.get_final_text()
    assert final.strip() == TEXT


async def test_a_failed_keep_alive_write_ends_a_silent_stream_as_a_disconnect() -> None:
    """ASGI 2.4: no disconnect message, only a write that fails; the keep-alive is that write on a silent stream."""
    closed = asyncio.Event()

    async def silent() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await asyncio.Event().wait()  # a model thinking, for ever
        finally:
            closed.set()  # the run's close: it is cancelled

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        if message.get("body") == SSE_COMMENT:
            raise OSError("connection reset by peer")
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    response = KeepAliveResponse(silent(), keepalive=SSE_COMMENT, every_s=0.01, media_type="text/event-stream")
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        await asyncio.wait_for(response(scope, receive, send), timeout=30)  # a hang guard
    assert closed.is_set()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
