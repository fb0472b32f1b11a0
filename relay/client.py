"""A small Python client for a Relay server: typed events, whole replies, sessions.

    from relay.client import Client

    relay = Client("http://127.0.0.1:8000", user_id="ada")
    for event in relay.stream("Tell me a story", provider_id="openai"):
        if event.type == "text-delta":
            print(event.content, end="")
    reply = relay.chat("And a shorter one?", session_id=relay.session_id)

``AsyncClient`` has the same methods as coroutines and async iterators. The
seed's names are aliases: ``invoke``/``invoke_stream`` on ``Client``,
``ainvoke``/``ainvoke_stream`` on ``AsyncClient``. Errors raise the
``relay.errors`` class matching the server's status.

Streams resume: the run is started ``resumable``, and when the connection
drops the client reconnects to ``GET /api/streaming/runs/{run_id}/events``
with the last event id it saw (``Last-Event-ID``), so each event is yielded
once. ``resume=False`` turns this off; then leaving a stream early also
cancels its run, where a resumable run goes on to its end on the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from relay.errors import error_for_status
from relay.events import EVENT_ADAPTER, Event, StatusEvent
from relay.http.io import USER_HEADER
from relay.reply import Reply

__all__ = ["Client", "AsyncClient", "ChatResult"]

SESSION_HEADER = "X-Session-Id"
Messages = str | list[dict[str, Any]]


@dataclass(slots=True)
class ChatResult:
    """A finished reply, as ``chat`` returns it."""

    content: str
    session_id: str | None
    run_id: str | None = None
    finish_reason: str | None = None
    reasoning_content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    error: dict[str, Any] | None = None


def _payload(messages: Messages, options: dict[str, Any], resume: bool) -> dict[str, Any]:
    listed = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
    payload = {"messages": listed, "stream_format": "sse", "resumable": resume}
    return payload | {k: v for k, v in options.items() if v is not None}


class _Progress:
    """How far a stream got, so that a dropped connection resumes where it stopped."""

    def __init__(self, payload: dict[str, Any], max_resumes: int) -> None:
        # Interleaved streams merge several runs: no single cursor resumes them.
        self.resumable = bool(payload.get("resumable")) and payload.get("generator_mode") != "interleaved"
        self.resumes_left = max_resumes
        self.run_id: str | None = None
        self.last_id: int | str | None = None
        self.finished = False

    def see(self, line: str) -> Event | None:
        event = _event(line)
        if event is None:
            return None
        if isinstance(event, StatusEvent) and event.run_id:
            self.run_id = self.run_id or event.run_id
        if event.id is not None:
            self.last_id = event.id
        self.finished = self.finished or event.type == "finish"
        return event

    def resume(self) -> tuple[str, dict[str, Any]] | None:
        """The request that picks the run up again, or None when it cannot (or may not) be resumed."""
        if self.finished or not self.resumable or self.run_id is None or self.resumes_left <= 0:
            return None
        self.resumes_left -= 1
        return f"/api/streaming/runs/{self.run_id}/events", {"headers": {"Last-Event-ID": str(self.last_id or 0)}}


def _raise_for(status: int, body: bytes) -> None:
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise error_for_status(status, body.decode(errors="replace") or f"HTTP {status}") from None
    raise error_for_status(status, error.get("message", ""), param=error.get("param"), code=error.get("code"))


def _event(line: str) -> Event | None:
    return EVENT_ADAPTER.validate_python(orjson.loads(line[6:])) if line.startswith("data: ") else None


def _result(events: list[Event], session_id: str | None) -> ChatResult:
    reply = Reply()
    reply.extend([event.model_dump(exclude_none=True) for event in events])
    finish = next((event for event in reversed(events) if event.type == "finish"), None)
    return ChatResult(
        content=reply.content,
        session_id=session_id,
        run_id=getattr(finish, "run_id", None),
        finish_reason=reply.finish_reason,
        reasoning_content=reply.reasoning_content,
        tool_calls=reply.tool_call_list(),
        citations=reply.citations,
        usage=reply.usage,
        error=reply.error,
    )


class _Base:
    def __init__(self, base_url: str, user_id: str | None, api_key: str | None, max_resumes: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_resumes = max_resumes
        self.headers = {"Accept": "application/json"}
        if user_id:
            self.headers[USER_HEADER] = user_id
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        # The session of the last reply: pass it back to continue the conversation.
        self.session_id: str | None = None

    def _remember(self, response: httpx.Response) -> None:
        self.session_id = response.headers.get(SESSION_HEADER, self.session_id)


class Client(_Base):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        user_id: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_resumes: int = 3,
    ) -> None:
        super().__init__(base_url, user_id, api_key, max_resumes)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stream(self, messages: Messages, *, resume: bool = True, **options: Any) -> Iterator[Event]:
        """Typed events as they arrive; ``options`` are ``/api/streaming/chat`` fields (``provider_id``, …)."""
        payload = _payload(messages, options, resume)
        progress = _Progress(payload, self.max_resumes)
        method, path, kwargs = "POST", "/api/streaming/chat", {"json": payload}
        while True:
            try:
                with self.http.stream(method, path, **kwargs) as response:
                    if response.status_code != 200:
                        _raise_for(response.status_code, response.read())
                    self._remember(response)
                    for line in response.iter_lines():
                        if (event := progress.see(line)) is not None:
                            yield event
            except httpx.TransportError:
                if (again := progress.resume()) is None:
                    raise
            else:
                if (again := progress.resume()) is None:
                    return
            method, (path, kwargs) = "GET", again

    def chat(self, messages: Messages, **options: Any) -> ChatResult:
        return _result(list(self.stream(messages, **options)), self.session_id)

    invoke = chat
    invoke_stream = stream

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            _raise_for(response.status_code, response.content)
        return response.json() if response.content else None

    def create_session(self, **fields: Any) -> dict[str, Any]:
        return dict(self._json("POST", "/api/sessions", json=fields))

    def list_sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/sessions", params={"limit": limit})["data"])

    def get_session(self, session_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/sessions/{session_id}"))

    def update_session(self, session_id: str, version: int | None = None, **fields: Any) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/api/sessions/{session_id}", json=fields | {"version": version}))

    def delete_session(self, session_id: str) -> None:
        self._json("DELETE", f"/api/sessions/{session_id}")

    def messages(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit else {}
        return list(self._json("GET", f"/api/sessions/{session_id}/messages", params=params)["messages"])

    def runs(self, session_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/sessions/{session_id}/runs")["runs"])


class AsyncClient(_Base):
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        user_id: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_resumes: int = 3,
    ) -> None:
        super().__init__(base_url, user_id, api_key, max_resumes)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def stream(self, messages: Messages, *, resume: bool = True, **options: Any) -> AsyncIterator[Event]:
        payload = _payload(messages, options, resume)
        progress = _Progress(payload, self.max_resumes)
        method, path, kwargs = "POST", "/api/streaming/chat", {"json": payload}
        while True:
            try:
                async with self.http.stream(method, path, **kwargs) as response:
                    if response.status_code != 200:
                        _raise_for(response.status_code, await response.aread())
                    self._remember(response)
                    async for line in response.aiter_lines():
                        if (event := progress.see(line)) is not None:
                            yield event
            except httpx.TransportError:
                if (again := progress.resume()) is None:
                    raise
            else:
                if (again := progress.resume()) is None:
                    return
            method, (path, kwargs) = "GET", again

    async def chat(self, messages: Messages, **options: Any) -> ChatResult:
        return _result([event async for event in self.stream(messages, **options)], self.session_id)

    ainvoke = chat
    ainvoke_stream = stream

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            _raise_for(response.status_code, response.content)
        return response.json() if response.content else None

    async def create_session(self, **fields: Any) -> dict[str, Any]:
        return dict(await self._json("POST", "/api/sessions", json=fields))

    async def list_sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        return list((await self._json("GET", "/api/sessions", params={"limit": limit}))["data"])

    async def get_session(self, session_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/api/sessions/{session_id}"))

    async def update_session(self, session_id: str, version: int | None = None, **fields: Any) -> dict[str, Any]:
        return dict(await self._json("PATCH", f"/api/sessions/{session_id}", json=fields | {"version": version}))

    async def delete_session(self, session_id: str) -> None:
        await self._json("DELETE", f"/api/sessions/{session_id}")

    async def messages(self, session_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit else {}
        return list((await self._json("GET", f"/api/sessions/{session_id}/messages", params=params))["messages"])

    async def runs(self, session_id: str) -> list[dict[str, Any]]:
        return list((await self._json("GET", f"/api/sessions/{session_id}/runs"))["runs"])
