"""The Python client against a real server (in-process backend under uvicorn)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.client import AsyncClient, Client
from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict, InvalidRequest, NotFound
from relay.events import Event, FinishEvent, StatusEvent, TextDelta
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = Path(tmp_path_factory.mktemp("client")) / "relay.db"
    echo = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    with ServerThread(build_app(LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=[echo])))) as s:
        yield s.url


def test_sync_client_streams_typed_events_and_keeps_the_session(url: str) -> None:
    with Client(url, user_id="ada") as relay:
        events = list(relay.invoke_stream("typed events please", provider_id="echo"))
        assert isinstance(events[0], StatusEvent) and events[0].run_id and isinstance(events[1], TextDelta)
        assert isinstance(events[-1], FinishEvent) and [e.id for e in events] == list(range(1, len(events) + 1))
        first_session = relay.session_id
        reply = relay.invoke("second turn", session_id=first_session)
        assert reply.content == "second turn" and reply.session_id == first_session and reply.run_id
        assert [m["content"] for m in relay.messages(first_session)] == [
            "typed events please",
            "typed events please",
            "second turn",
            "second turn",
        ]
        assert [run["status"] for run in relay.runs(first_session)] == ["completed", "completed"]
        with pytest.raises(NotFound):
            relay.chat("x", provider_id="nowhere")
        with pytest.raises(InvalidRequest) as bad:
            relay.chat([{"role": "wizard", "content": "x"}])
        assert bad.value.param == "messages[0].role"


def test_sync_client_sessions(url: str) -> None:
    with Client(url, user_id="bo") as relay:
        created = relay.create_session(name="notes", session_data={"n": 1})
        sid = created["session_id"]
        assert relay.update_session(sid, version=1, session_data={"n": 2})["version"] == 2
        with pytest.raises(Conflict):
            relay.update_session(sid, version=1, session_data={"n": 3})
        assert [s["session_id"] for s in relay.list_sessions()] == [sid]
        relay.delete_session(sid)
        with pytest.raises(NotFound):
            relay.get_session(sid)


async def test_async_client(url: str) -> None:
    async with AsyncClient(url, user_id="cy") as relay:
        texts = [
            e.content async for e in relay.ainvoke_stream("async words", provider_id="echo") if isinstance(e, TextDelta)
        ]
        assert "".join(texts) == "async words"
        reply = await relay.ainvoke("and again", session_id=relay.session_id)
        assert reply.content == "and again" and reply.finish_reason == "stop"
        assert len(await relay.messages(reply.session_id)) == 4  # type: ignore[arg-type]
        session = await relay.create_session(name="x")
        assert (await relay.get_session(session["session_id"]))["name"] == "x"


WORDS = " ".join(f"word{i}" for i in range(60))


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that cuts its first connection after ``cut_after`` bytes of response."""

    def __init__(self, target: str, cut_after: int) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, limit), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])  # mid-event, most likely: the client holds half a line
                    self.cuts += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (source, sink):  # shutdown, not just close: the other direction's thread is blocked on it
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def check_exactly_once(events: list[Event]) -> None:
    ids = [event.id for event in events if isinstance(event.id, int)]
    assert ids == sorted(set(ids))  # nothing repeated, nothing out of order
    assert "".join(e.content for e in events if isinstance(e, TextDelta)) == WORDS
    assert [type(e) for e in events].count(FinishEvent) == 1 and isinstance(events[-1], FinishEvent)
    assert events[-1].reason == "stop"


def test_a_dropped_stream_resumes_where_it_stopped(url: str) -> None:
    proxy = CuttingProxy(url, cut_after=1500)
    try:
        with Client(proxy.url, user_id="dee") as relay:
            events = list(relay.stream(WORDS, provider_options={"tokens_per_s": 60}))
    finally:
        proxy.close()
    assert proxy.cuts == 1 and proxy.connections == 2
    check_exactly_once(events)
    assert [event.id for event in events] == list(range(1, len(events) + 1))


async def test_the_async_client_resumes_a_chunked_stream_exactly(url: str) -> None:
    proxy = CuttingProxy(url, cut_after=1500)
    try:
        async with AsyncClient(proxy.url, user_id="dee") as relay:
            stream = relay.stream(WORDS, generator_mode="chunked", chunk_size=5, provider_options={"tokens_per_s": 60})
            events = [event async for event in stream]
    finally:
        proxy.close()
    assert proxy.cuts == 1 and proxy.connections == 2
    check_exactly_once(events)


def test_without_resume_a_drop_is_an_error(url: str) -> None:
    proxy = CuttingProxy(url, cut_after=1500)
    try:
        with Client(proxy.url, user_id="dee") as relay, pytest.raises(httpx.RemoteProtocolError):
            list(relay.stream(WORDS, resume=False, provider_options={"tokens_per_s": 60}))
    finally:
        proxy.close()
