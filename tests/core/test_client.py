"""The Python client against a real server (in-process backend under uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.app import build_app
from relay.client import AsyncClient, Client
from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict, InvalidRequest, NotFound
from relay.events import FinishEvent, StatusEvent, TextDelta
from relay.local import LocalBackend
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
