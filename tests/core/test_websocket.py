"""The WebSocket protocol with a real ``websockets`` client, in-process under uvicorn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.detached import QUEUED_EVENTS
from relay.http.websocket import OUTBOX_SIZE
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread
from tests.waiting import await_until

WORDS = " ".join(f"word{i}" for i in range(60))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, fake_openai: tuple[FakeOpenAI, str]) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("ws")) / "relay.db"
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
        ProviderConfig(provider_id="echo-2", provider_type="echo", options={"repeat": 2}),
        ProviderConfig(
            provider_id="up", provider_type="openai_compatible", model="fake", base_url=fake_openai[1], max_retries=0
        ),
    ]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


@pytest.fixture(scope="module")
def url(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as server:
        yield server.url.replace("http://", "ws://")


async def send(ws: Any, message_type: str, request_id: str | None = None, **data: Any) -> None:
    await ws.send(orjson.dumps({"message_type": message_type, "request_id": request_id, "data": data}).decode())


async def until_finish(ws: Any, request_id: str) -> list[dict[str, Any]]:
    """Every message for ``request_id`` up to its finish (or error)."""
    seen = []
    async for raw in ws:
        message = orjson.loads(raw)
        if message["request_id"] != request_id:
            continue
        seen.append(message)
        if message["message_type"] == "error" or message["data"].get("event_type") == "finish":
            return seen
    return seen


def text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"]["event_data"]["content"] for m in messages if m["data"].get("event_type") == "text-delta")


def events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"]["event_data"] for m in messages if m["message_type"] == "stream_event"]


def run_status(backend: LocalBackend, run_id: str) -> str:
    return str(backend.store.get_run(run_id)["status"])  # type: ignore[index]


async def test_chat_ping_and_the_seed_event_shape(url: str, backend: LocalBackend) -> None:
    async with websockets.connect(f"{url}/api/streaming/ws/ann") as ws:
        await send(ws, "ping", "p1")
        assert orjson.loads(await ws.recv()) == {"message_type": "pong", "request_id": "p1", "data": {}}
        await send(ws, "chat_request", "r1", messages=[{"role": "user", "content": "hello socket"}])
        messages = await until_finish(ws, "r1")
    assert [m["message_type"] for m in messages[:2]] == ["ack", "ack"]
    session_id = messages[1]["data"]["session_id"]
    assert text(messages) == "hello socket" and messages[-1]["data"]["event_data"]["reason"] == "stop"
    assert backend.store.get_session(session_id)["user_id"] == "ann"  # type: ignore[index]


async def test_two_requests_in_flight_and_a_cancel(url: str, backend: LocalBackend) -> None:
    slow = {"provider_options": {"tokens_per_s": 20}}
    async with websockets.connect(f"{url}/api/streaming/ws/bea") as ws:
        await send(
            ws, "chat_request", "long", messages=[{"role": "user", "content": " ".join(["w"] * 200)}], options=slow
        )
        await send(ws, "chat_request", "short", messages=[{"role": "user", "content": "quick one"}])
        finished: dict[str, dict[str, Any]] = {}
        long_text: list[str] = []
        session_id = None
        async for raw in ws:
            message = orjson.loads(raw)
            data = message["data"]
            if message["request_id"] == "long" and data.get("status") == "started":
                session_id = data["session_id"]
            if message["request_id"] == "long" and data.get("event_type") == "text-delta":
                long_text.append(data["event_data"]["content"])
                if len(long_text) == 3:
                    await send(ws, "cancel", "long")
            if data.get("event_type") == "finish":
                finished[message["request_id"]] = data["event_data"]
                if len(finished) == 2:
                    break
    assert finished["short"]["reason"] == "stop" and finished["long"]["reason"] == "cancelled"
    assert session_id is not None
    [run] = backend.store.runs(session_id)
    assert run["status"] == "cancelled" and 3 <= len(run["output"].split()) < 200


async def test_feedback_interleaved_and_errors(url: str, backend: LocalBackend) -> None:
    async with websockets.connect(f"{url}/api/streaming/ws/cy") as ws:
        await send(
            ws,
            "chat_request",
            "both",
            messages=[{"role": "user", "content": "compare"}],
            generator_mode="interleaved",
            options={"provider_ids": ["echo", "echo-2"]},
        )
        messages = await until_finish(ws, "both")
        messages += await until_finish(ws, "both")
        by_provider: dict[str, str] = {}
        for m in messages:
            if m["data"].get("event_type") == "text-delta":
                event = m["data"]["event_data"]
                by_provider[event["provider"]] = by_provider.get(event["provider"], "") + event["content"]
        assert by_provider == {"echo": "compare", "echo-2": "compare compare"}
        run_id = next(m["data"]["event_data"]["run_id"] for m in messages if m["data"].get("event_type") == "finish")

        await send(ws, "feedback", "f1", run_id=run_id, rating=5, comment="useful")
        assert orjson.loads(await ws.recv())["data"] == {"status": "stored", "run_id": run_id}
        assert backend.store.get_run(run_id)["feedback"] == {"rating": 5, "comment": "useful"}  # type: ignore[index]

        for message, param in [
            ({"message_type": "teleport"}, "message_type"),
            ({"message_type": "chat_request", "request_id": "x", "data": {"messages": []}}, "messages"),
            ({"message_type": "feedback", "request_id": "y", "data": {"run_id": run_id, "rating": 9}}, "rating"),
        ]:
            await ws.send(orjson.dumps(message).decode())
            reply = orjson.loads(await ws.recv())
            while reply["message_type"] == "ack":
                reply = orjson.loads(await ws.recv())
            assert reply["message_type"] == "error" and reply["data"]["param"] == param, reply
        await send(ws, "ping", "still-alive")
        assert orjson.loads(await ws.recv())["message_type"] == "pong"

    async with websockets.connect(f"{url}/api/streaming/ws/mallory") as ws:
        await send(ws, "feedback", "f2", run_id=run_id, rating=-1)
        assert orjson.loads(await ws.recv())["data"]["type"] == "not_found_error"


async def test_the_path_user_must_match_the_caller(url: str) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{url}/api/streaming/ws/ann", additional_headers={"X-User-Id": "eve"}):
            pass


async def test_a_bad_session_id_is_refused_and_never_stored(url: str, backend: LocalBackend) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{url}/api/streaming/ws/ann?session_id=bad%20id/../x"):
            pass
    async with websockets.connect(f"{url}/api/streaming/ws/ann") as ws:
        body = {"messages": [{"role": "user", "content": "hi"}], "session_id": "bad id/../x"}
        await send(ws, "chat_request", "r1", **body)
        replies = await until_finish(ws, "r1")
        assert [m["message_type"] for m in replies] == ["ack", "error"]
        assert replies[-1]["data"]["param"] == "session_id"
        await send(ws, "chat_request", "r2", messages=[{"role": "user", "content": "still here"}])
        assert (await until_finish(ws, "r2"))[-1]["data"]["event_type"] == "finish"
    assert backend.store.get_session("bad id/../x") is None


async def read_until_texts(ws: Any, request_id: str, count: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async for raw in ws:
        message = orjson.loads(raw)
        if message["request_id"] == request_id:
            seen.append(message)
        if sum(m["data"].get("event_type") == "text-delta" for m in seen) == count:
            return seen
    raise AssertionError("the stream ended early")


async def test_a_dropped_socket_leaves_the_run_going_and_resume_gives_exactly_the_rest(
    url: str, backend: LocalBackend
) -> None:
    slow = {"provider_options": {"tokens_per_s": 60}}
    async with websockets.connect(f"{url}/api/streaming/ws/dora") as ws:
        await send(ws, "chat_request", "r1", messages=[{"role": "user", "content": WORDS}], options=slow)
        seen = events(await read_until_texts(ws, "r1", 5))
        ws.transport.abort()  # the connection dies: no close frame, as when a network drops
    run_id, last_id = seen[0]["run_id"], seen[-1]["id"]
    before = "".join(e["content"] for e in seen if e["type"] == "text-delta")
    assert run_status(backend, run_id) == "running"

    async with websockets.connect(f"{url}/api/streaming/ws/dora") as ws:
        await send(ws, "resume", "again", run_id=run_id, after=last_id)
        rest = events(await until_finish(ws, "again"))
    assert [e["id"] for e in rest] == list(range(last_id + 1, last_id + 1 + len(rest)))
    assert before + "".join(e["content"] for e in rest if e["type"] == "text-delta") == WORDS
    assert rest[-1]["type"] == "finish" and rest[-1]["reason"] == "stop"
    assert run_status(backend, run_id) == "completed"

    async with websockets.connect(f"{url}/api/streaming/ws/dora") as ws:  # a finished run replays from the store
        await send(ws, "resume", "replay", run_id=run_id, after=0)
        replay = events(await until_finish(ws, "replay"))
    assert "".join(e["content"] for e in replay if e["type"] == "text-delta") == WORDS
    async with websockets.connect(f"{url}/api/streaming/ws/mallory") as ws:
        await send(ws, "resume", "steal", run_id=run_id, after=0)
        assert orjson.loads(await ws.recv())["data"]["type"] == "not_found_error"
        await send(ws, "resume", "bad", run_id=run_id, after="x")
        assert orjson.loads(await ws.recv())["data"]["param"] == "data.after"


async def test_a_run_that_asked_not_to_resume_is_cancelled_with_its_socket(url: str, backend: LocalBackend) -> None:
    options = {"provider_options": {"tokens_per_s": 60}, "resumable": False}
    async with websockets.connect(f"{url}/api/streaming/ws/eli") as ws:
        await send(ws, "chat_request", "r1", messages=[{"role": "user", "content": WORDS}], options=options)
        run_id = events(await read_until_texts(ws, "r1", 2))[0]["run_id"]
        ws.transport.abort()
    await await_until(
        lambda: run_status(backend, run_id) != "running", timeout_s=10, interval_s=0.005, what="the run to end"
    )
    assert run_status(backend, run_id) == "cancelled"


async def test_cancel_reaches_the_upstream(url: str, fake_openai: tuple[FakeOpenAI, str]) -> None:
    fake = fake_openai[0]
    marker = "cancel-latency-probe"
    async with websockets.connect(f"{url}/api/streaming/ws/fay") as ws:
        await send(
            ws,
            "chat_request",
            "hang",
            provider_id="up",
            messages=[{"role": "user", "content": marker}],
            options={"model": "fake-hang"},
        )
        record = await await_until(
            lambda: next((r for r in fake.requests if marker in str((r["body"] or {}).get("messages"))), None),
            timeout_s=10,
            interval_s=0.005,
            what="the request to reach the upstream",
        )
        assert not record["disconnected"].is_set()
        sent = time.monotonic()
        await send(ws, "cancel", "hang")
        finish = (await until_finish(ws, "hang"))[-1]["data"]["event_data"]
        assert await asyncio.to_thread(record["disconnected"].wait, 5.0)
    assert finish["reason"] == "cancelled"
    print(f"upstream saw the cancel after {(record['disconnected_at'] - sent) * 1000:.1f} ms")


async def test_a_slow_reader_holds_the_stream_back_then_gets_all_of_it(url: str, backend: LocalBackend) -> None:
    """A client that does not read: the server's queue for it fills to its limit and the run waits, unbuffered."""
    words = " ".join(f"{i:04d}" + "x" * 996 for i in range(120))  # 120 words of 1,000 characters
    reply = " ".join([words] * 100)  # 12 MB: far more than the socket buffers between server and client hold
    async with (
        websockets.connect(f"{url}/api/streaming/ws/gus", max_queue=4, max_size=None, compression=None) as ws,
        httpx.AsyncClient(base_url=url.replace("ws://", "http://")) as http,
    ):

        async def stats() -> dict[str, Any]:
            return dict((await http.get("/api/stats")).json())

        def completed(stats: dict[str, Any]) -> int:
            return int(next(p["completed"] for p in stats["providers"] if p["provider_id"] == "echo"))

        echoed = completed(await stats())
        await send(
            ws,
            "chat_request",
            "big",
            messages=[{"role": "user", "content": words}],
            options={"session_id": "slow-reader", "provider_options": {"repeat": 100, "tokens_per_s": 12000}},
        )

        # Wait until the server's queue for this socket is full and the provider has produced the whole reply.
        now = await await_until(
            stats,
            timeout_s=30,
            what="a full outbox and the whole reply produced",
            done=lambda now: now["websocket"]["queued_messages"] >= OUTBOX_SIZE and completed(now) != echoed,
        )
        [run] = backend.store.runs("slow-reader")
        assert run["status"] == "running"  # held back: the run waits for the reader instead of queueing the reply
        assert now["websocket"]["queued_events"] < 2 * QUEUED_EVENTS and now["websocket"]["messages_sent"] < 12_000

        messages = await until_finish(ws, "big")
        assert (await stats())["websocket"]["queued_messages"] == 0
    assert text(messages) == reply and messages[-1]["data"]["event_data"]["reason"] == "stop"


async def test_priority_mode_over_the_socket(url: str) -> None:
    async with websockets.connect(f"{url}/api/streaming/ws/hal") as ws:
        await send(ws, "chat_request", "p", messages=[{"role": "user", "content": WORDS}], generator_mode="priority")
        messages = await until_finish(ws, "p")
    delivered = events(messages)
    assert text(messages) == WORDS and delivered[-1]["type"] == "finish" and delivered[0]["type"] == "status"
    ids = [e["id"] for e in delivered if "id" in e]
    assert ids == sorted(ids) and ids[-1] == len(WORDS.split()) + 3
