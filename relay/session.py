"""One session's turn logic, independent of where it runs (a Ray actor or in-process).

The rules from DESIGN.md live here: one turn at a time, the user message is
durable before the provider is called, and a run that ends early is stored as
``interrupted`` or ``failed`` with its partial text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import RelayError, as_relay_error
from .events import finish
from .reply import Reply
from .request import ChatRequest
from .store import SQLiteStore, new_id

__all__ = ["Session", "StreamOpener", "history_message"]

log = logging.getLogger("relay.session")

StreamOpener = Callable[[ChatRequest], AsyncIterator[list[dict[str, Any]]]]
_HISTORY_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def history_message(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the provider sees it: bookkeeping fields dropped."""
    return {key: stored[key] for key in _HISTORY_KEYS if stored.get(key) is not None}


class Session:
    def __init__(self, store: SQLiteStore, session_id: str, user_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self.user_id = user_id
        self.history = [history_message(m) for m in store.messages(session_id)]
        self.turns_waiting = 0
        self.last_active = time.monotonic()
        self._turn = asyncio.Lock()  # FIFO: concurrent sends run in arrival order

    @property
    def busy(self) -> bool:
        return self.turns_waiting > 0

    async def chat(self, request: ChatRequest, open_stream: StreamOpener) -> AsyncIterator[list[dict[str, Any]]]:
        self.turns_waiting += 1
        try:
            async with self._turn:
                async for batch in self._run(request, open_stream):
                    yield batch
        finally:
            self.turns_waiting -= 1
            self.last_active = time.monotonic()

    async def _run(self, request: ChatRequest, open_stream: StreamOpener) -> AsyncIterator[list[dict[str, Any]]]:
        run_id = new_id("run")
        for message in request.messages:
            self.store.append_message(self.session_id, message, run_id)
        self.store.start_run(
            run_id, self.session_id, provider=request.provider, model=request.model, input_messages=request.messages
        )
        self.history.extend(request.messages)
        reply = Reply()
        started = time.monotonic()
        ttft: float | None = None
        status = "interrupted"
        try:
            async for batch in open_stream(request.with_messages(list(self.history))):
                if ttft is None:
                    ttft = time.monotonic() - started
                reply.extend(batch)
                if batch[-1]["type"] == "finish":  # the session sends its own, with run id and metrics
                    batch = batch[:-1]
                if batch:
                    yield batch
            status = "completed" if reply.error is None else "failed"
        except (asyncio.CancelledError, GeneratorExit):
            status = "interrupted"
            raise
        except Exception as exc:
            error = as_relay_error(exc)
            if not isinstance(exc, RelayError):
                log.exception("run %s failed", run_id)
            status = "failed"
            reply.add(error.to_event())
            reply.finish_reason = "error"
            yield [error.to_event()]
        finally:
            self._persist(run_id, status, reply, started, ttft)
        yield [self._finish(run_id, reply, started, ttft, request)]

    def _finish(
        self, run_id: str, reply: Reply, started: float, ttft: float | None, request: ChatRequest
    ) -> dict[str, Any]:
        total = time.monotonic() - started
        tokens = reply.usage.get("output_tokens", 0)
        return finish(
            reply.finish_reason or ("error" if reply.error else "stop"),
            run_id=run_id,
            session_id=self.session_id,
            metrics={
                "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
                "total_ms": round(total * 1000, 2),
                "tokens_per_s": round(tokens / total, 2) if tokens and total > 0 else None,
                "model": request.model,
            },
        )

    def _persist(self, run_id: str, status: str, reply: Reply, started: float, ttft: float | None) -> None:
        if reply.text or reply.tool_calls:
            message = reply.assistant_message()
            self.history.append(message)
            self.store.append_message(self.session_id, message, run_id)
        self.store.finish_run(
            run_id,
            status=status,
            output=reply.content,
            reasoning=reply.reasoning_content,
            tool_calls=reply.tool_call_list(),
            usage=reply.usage,
            finish_reason=reply.finish_reason
            if status == "completed"
            else ("cancelled" if status == "interrupted" else "error"),
            error=reply.error,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            total_ms=(time.monotonic() - started) * 1000,
        )
