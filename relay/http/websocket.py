"""``/api/streaming/ws/{user_id}``: the seed's WebSocket protocol, several requests in flight per connection.

Every message is ``{message_type, request_id, data}``. The client sends
``chat_request`` (``{messages, provider_id?, generator_mode?, options}``),
``cancel`` (``{request_id}``), ``feedback`` (``{run_id, rating, comment}``) and
``ping``; the server answers ``ack``, ``stream_event`` (``{event_type,
event_data}``), ``error`` and ``pong``. Outgoing messages pass through one
bounded queue per connection: a slow reader holds its streams back instead of
growing the server's memory.

A run started here survives a dropped connection (unless its request said
``resumable: false``) for ``RESUME_GRACE_S``: the client reconnects and sends
``resume`` (``{run_id, after}``, ``after`` the last event id it saw) to get the
rest. ``cancel`` stops a run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from relay.errors import InvalidRequest, RelayError, as_relay_error
from relay.http.auth import identity_of
from relay.http.detached import DetachedRun
from relay.http.io import USER_HEADER
from relay.http.schemas import SESSION_ID_PATTERN, StreamingChatBody, validation_error
from relay.modes import GeneratorMode, apply_mode, check_mode, interleave
from relay.session.runlog import Cursor

if TYPE_CHECKING:
    from relay.http.gateway import Gateway

__all__ = ["WebSocketManager", "WebSocketMessage"]

log = logging.getLogger("relay.http.websocket")

_BINARY = InvalidRequest("Binary frames are not accepted; send each message as JSON text", param="frame")
OUTBOX_SIZE = 256  # messages queued for one connection before its streams wait for the reader


class WebSocketMessage(BaseModel):
    """The seed's ``WebSocketMessage(message_type, data)``, with a ``request_id`` to tell requests apart."""

    model_config = ConfigDict(extra="forbid")
    message_type: str
    request_id: str | None = Field(default=None, max_length=128)
    data: dict[str, Any] = Field(default_factory=dict)


class FeedbackData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    rating: int = Field(ge=-1, le=5)
    comment: str | None = Field(default=None, max_length=4000)


class WebSocketManager:
    """Live connections and their counters: the seed's ``get_websocket_manager().get_statistics()``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.live: set[_Connection] = set()
        self.opened = 0
        self.received = 0
        self.sent = 0

    def get_statistics(self) -> dict[str, int]:
        """Counters, and what waits in the connections' queues now: never more than ``outbox_limit`` each."""
        return {
            "connections": len(self.live),
            "opened": self.opened,
            "messages_received": self.received,
            "messages_sent": self.sent,
            "queued_messages": sum(connection.outbox.qsize() for connection in self.live),
            "queued_events": sum(run.queued for connection in self.live for run in connection.runs.values()),
            "outbox_limit": OUTBOX_SIZE,
        }

    async def handle(self, websocket: WebSocket) -> None:
        user_id = websocket.path_params["user_id"]
        identity = identity_of(websocket)  # with auth on, the key's user must be the one in the path
        claimed = identity.user_id if identity is not None else websocket.headers.get(USER_HEADER)
        if claimed is not None and claimed != user_id:
            await websocket.close(code=1008, reason="the user in the path is not the caller")
            return
        session_id = websocket.query_params.get("session_id") or None
        if session_id is not None and not re.match(SESSION_ID_PATTERN, session_id):
            await websocket.close(code=1008, reason="session_id: use 1-128 letters, digits or _.:-")
            return
        await websocket.accept()
        self.opened += 1
        connection = _Connection(self, websocket, user_id, session_id)
        self.live.add(connection)
        try:
            await connection.run()
        finally:
            self.live.discard(connection)


class _Connection:
    def __init__(self, manager: WebSocketManager, websocket: WebSocket, user_id: str, session_id: str | None) -> None:
        self.manager = manager
        self.websocket = websocket
        self.user_id = user_id
        self.session_id = session_id
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX_SIZE)
        self.requests: dict[str, asyncio.Task[None]] = {}
        self.runs: dict[str, DetachedRun] = {}
        self.dropped = False

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_all())
        try:
            while True:
                frame = await self.websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(frame.get("code", 1000))
                self.manager.received += 1
                if frame.get("text") is None:  # a binary frame: the protocol is JSON text
                    await self._put("error", None, _BINARY.to_body()["error"])
                    continue
                await self._handle(frame["text"])
        except WebSocketDisconnect:
            pass
        finally:
            self.dropped = True  # from here on a request that ends leaves a resumable run going
            for task in self.requests.values():
                task.cancel()
            await asyncio.gather(*self.requests.values(), return_exceptions=True)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send_all(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.websocket.send_text(orjson.dumps(message).decode())
            self.manager.sent += 1

    async def _put(self, message_type: str, request_id: str | None, data: dict[str, Any]) -> None:
        await self.outbox.put({"message_type": message_type, "request_id": request_id, "data": data})

    async def _handle(self, raw: str) -> None:
        try:
            message = WebSocketMessage.model_validate(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            await self._put("error", None, InvalidRequest(f"Malformed JSON message: {exc}").to_body()["error"])
            return
        except ValidationError as exc:
            await self._put("error", None, validation_error(exc).to_body()["error"])
            return
        try:
            await self._dispatch(message)
        except RelayError as error:
            await self._put("error", message.request_id, error.to_body()["error"])

    async def _dispatch(self, message: WebSocketMessage) -> None:
        kind, request_id = message.message_type, message.request_id
        if kind == "ping":
            await self._put("pong", request_id, {})
        elif kind == "chat_request":
            if not request_id or request_id in self.requests:
                raise InvalidRequest("chat_request needs a request_id not already in flight", param="request_id")
            self.requests[request_id] = asyncio.create_task(self._chat(request_id, message.data))
            await self._put("ack", request_id, {"status": "accepted"})
        elif kind == "resume":
            if not request_id or request_id in self.requests:
                raise InvalidRequest("resume needs a request_id not already in flight", param="request_id")
            run_id = message.data.get("run_id")
            after = message.data.get("after", 0)
            if not isinstance(run_id, str):
                raise InvalidRequest("resume needs data.run_id", param="data.run_id")
            try:
                cursor = Cursor.parse(after)
            except ValueError:
                raise InvalidRequest("data.after must be an event id from this run", param="data.after") from None
            batches = await self.manager.gateway.run_events(run_id, self.user_id, cursor)
            self.requests[request_id] = asyncio.create_task(self._relay(request_id, batches))
            await self._put("ack", request_id, {"status": "resuming", "run_id": run_id, "after": after})
        elif kind == "cancel":
            target = message.data.get("request_id") or request_id
            task = self.requests.get(target or "")
            if task is None:
                raise InvalidRequest(f"No request {target!r} is in flight", param="data.request_id")
            task.cancel()
            await self._put("ack", target, {"status": "cancelled"})
        elif kind == "feedback":
            try:
                feedback = FeedbackData.model_validate(message.data)
            except ValidationError as exc:
                raise validation_error(exc) from None
            store = self.manager.gateway.backend.store
            await store.offload(
                store.set_feedback, feedback.run_id, self.user_id, feedback.model_dump(exclude={"run_id"})
            )
            await self._put("ack", request_id, {"status": "stored", "run_id": feedback.run_id})
        else:
            raise InvalidRequest(
                f"Unknown message_type {kind!r}; use chat_request, resume, cancel, feedback or ping",
                param="message_type",
            )

    async def _chat(self, request_id: str, data: dict[str, Any]) -> None:
        closers: list[Any] = []
        resumable = True
        run: DetachedRun | None = None
        try:
            body = self._body(data)
            # A socket drops more often than it is closed on purpose: its runs are resumable unless told otherwise.
            resumable = body.resumable or "resumable" not in body.model_fields_set
            generator = body.generator()
            check_mode(generator)
            providers = body.provider_ids if generator.mode == GeneratorMode.INTERLEAVED else [body.provider_id]
            if generator.mode == GeneratorMode.INTERLEAVED and len(providers) < 2:
                raise InvalidRequest("interleaved mode needs at least two provider_ids", param="provider_ids")
            streams = {}
            for provider_id in providers:
                chat = await self.manager.gateway.chat_request(body, body.model, provider_id)
                session_id = body.session_id or self.session_id
                if len(providers) > 1 and session_id:
                    session_id = f"{session_id}.{provider_id}"
                opening = self.manager.gateway.open_run(session_id=session_id, user_id=self.user_id, request=chat)
                # Opened outside this connection's context, as for HTTP: Ray Serve's cancellation of the
                # connection must not reach the run.
                turn = await asyncio.create_task(opening, context=contextvars.Context())
                closers.append(turn.close)
                streams[provider_id or chat.provider] = turn.batches
                await self._put("ack", request_id, {"status": "started", "session_id": turn.session_id})
            merged = interleave(streams) if len(streams) > 1 else next(iter(streams.values()))
            turns, closers = closers, []

            async def close() -> None:
                await asyncio.gather(*(closer() for closer in turns), return_exceptions=True)

            run = self.runs[request_id] = self.manager.gateway.detach(apply_mode(merged, generator), close)
            await self._forward(request_id, run.events())
        except asyncio.CancelledError:
            if run is not None and not (self.dropped and resumable):
                await run.stop()  # before the client hears of it, so that its stored run already says so
            finish = {"type": "finish", "reason": "cancelled"}
            with contextlib.suppress(asyncio.QueueFull):  # the connection may be closing: never wait here
                self.outbox.put_nowait(
                    {
                        "message_type": "stream_event",
                        "request_id": request_id,
                        "data": {"event_type": "finish", "event_data": finish},
                    }
                )
        except Exception as exc:
            error = as_relay_error(exc)
            if not isinstance(exc, RelayError):
                log.exception("websocket request %s failed", request_id)
            await self._put("error", request_id, error.to_body()["error"])
        finally:
            run = self.runs.pop(request_id, None)
            if run is not None and self.dropped and resumable:
                run.detach()
            elif run is not None:
                await run.stop()
            for close in closers:
                with contextlib.suppress(Exception):
                    await close()
            self.requests.pop(request_id, None)

    async def _forward(self, request_id: str, batches: Any) -> None:
        async with contextlib.aclosing(batches):  # closed at once when cancelled, not when collected
            async for batch in batches:
                for event in batch:
                    await self._put("stream_event", request_id, {"event_type": event["type"], "event_data": event})

    async def _relay(self, request_id: str, batches: Any) -> None:
        try:
            await self._forward(request_id, batches)
        finally:
            self.requests.pop(request_id, None)

    @staticmethod
    def _body(data: dict[str, Any]) -> StreamingChatBody:
        """``{messages, provider_id?, generator_mode?, options}``: options hold any other streaming-chat field."""
        fields = {key: value for key, value in data.items() if key != "options"} | dict(data.get("options") or {})
        try:
            return StreamingChatBody.model_validate(fields)
        except ValidationError as exc:
            raise validation_error(exc) from None
