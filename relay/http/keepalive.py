"""Keep-alive lines on a silent event stream.

A reply can be silent for minutes: a reasoning model thinking, a tool running, an
upstream queueing. Proxies and load balancers close a connection idle for long
(nginx's ``proxy_read_timeout`` and an AWS ALB's idle timeout are 60 s), and a
server that never writes to a client that left never learns it left: under
ASGI 2.4 Starlette hears of a disconnect only when a write fails, and Serve's
HAProxy ingress misses a dropped silent stream (benchmarks/README.md, lever 1).
So a stream that has sent nothing for ``every_s`` sends a line every parser of
its wire skips: an SSE comment, or on the Anthropic wire its own ``ping`` event.
A write that fails ends the stream as a disconnect, which cancels the run.
NDJSON and plain text have no such line; they get none.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Send

__all__ = ["ANTHROPIC_PING", "SSE_COMMENT", "KeepAliveResponse", "event_stream"]

SSE_COMMENT = b": keep-alive\n\n"
ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'


class KeepAliveResponse(StreamingResponse):
    """A ``StreamingResponse`` that writes ``keepalive`` whenever ``every_s`` pass without a write (0: never)."""

    def __init__(self, content: Any, *, keepalive: bytes, every_s: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.keepalive = keepalive
        self.every_s = every_s

    async def stream_response(self, send: Send) -> None:
        if self.every_s <= 0:
            await super().stream_response(send)
            return
        loop = asyncio.get_running_loop()
        writing = asyncio.Lock()  # a keep-alive never lands inside a chunk's write
        last_write = loop.time()
        stream = asyncio.current_task()
        assert stream is not None

        async def beat() -> None:
            nonlocal last_write
            while True:
                await asyncio.sleep(last_write + self.every_s - loop.time())
                async with writing:
                    if loop.time() - last_write >= self.every_s:
                        await send({"type": "http.response.body", "body": self.keepalive, "more_body": True})
                        last_write = loop.time()

        def heard(task: asyncio.Task[None]) -> None:
            if not task.cancelled():  # a beat ends only by a failed write (or by being cancelled below)
                stream.cancel()  # the stream waits on its run: stop it there

        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        beats = asyncio.create_task(beat())
        beats.add_done_callback(heard)
        try:
            async for chunk in self.body_iterator:
                async with writing:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    last_write = loop.time()
        except asyncio.CancelledError:
            if not beats.done() or beats.cancelled():
                raise
            stream.uncancel()
            raise OSError("the client went away during a keep-alive") from beats.exception()
        finally:
            beats.remove_done_callback(heard)
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beats
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def event_stream(
    content: Any, every_s: float, headers: dict[str, str] | None = None, *, keepalive: bytes = SSE_COMMENT
) -> KeepAliveResponse:
    """An SSE response that keeps a silent stream alive every ``every_s`` (the settings' ``stream_keepalive_s``)."""
    return KeepAliveResponse(
        content, keepalive=keepalive, every_s=every_s, media_type="text/event-stream", headers=headers
    )
