"""Relay's own streaming surface: ``POST /api/streaming/chat`` in every format and mode, and resume by event id."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from relay.errors import InvalidRequest
from relay.http.encoders import encode_ndjson, encode_sse, encode_text
from relay.http.gateway import (
    SESSION_HEADER,
    SSE_HEADERS,
    Gateway,
    chain,
    collect,
    encoded,
    first_batch,
    noop,
    session_id_of,
)
from relay.http.io import caller, read_json
from relay.http.keepalive import event_stream
from relay.http.schemas import StreamingChatBody, parse_body
from relay.modes import GeneratorMode, apply_mode, check_mode, interleave
from relay.session.backend import RunStream
from relay.session.runlog import Cursor
from relay.types import Batches

__all__ = ["streaming_routes", "stream_response"]


def stream_response(
    batches: Batches,
    close: Callable[[], Awaitable[None]],
    stream_format: str,
    headers: dict[str, str],
    keepalive_s: float,
) -> StreamingResponse:
    if stream_format == "ndjson":
        return StreamingResponse(
            encoded(batches, close, encode_ndjson), media_type="application/x-ndjson", headers=headers
        )
    if stream_format == "text":
        return StreamingResponse(
            encoded(batches, close, encode_text), media_type="text/plain; charset=utf-8", headers=headers
        )
    return event_stream(encoded(batches, close, encode_sse), keepalive_s, headers | SSE_HEADERS)


def streaming_routes(gateway: Gateway) -> list[Route]:
    async def streaming_chat(request: Request) -> Response:
        body = parse_body(StreamingChatBody, await read_json(request))
        user_id = caller(request, body.user_id)
        session_id = session_id_of(body.session_id or request.headers.get(SESSION_HEADER))
        generator = body.generator()
        check_mode(generator)
        if generator.mode == GeneratorMode.INTERLEAVED:
            return await interleaved(body, user_id, session_id)
        chat = await gateway.chat_request(body, body.model, body.provider_id, session_id=session_id, user_id=user_id)
        opening = gateway.open_run(session_id=session_id, user_id=user_id, request=chat)
        if body.resumable:
            # Opened outside the request's context: the run must not be a child that the request's cancellation
            # reaches when its caller drops (Ray Serve cancels a request's sub-tasks recursively).
            run = await asyncio.create_task(opening, context=contextvars.Context())
        else:
            run = await opening
        headers = {SESSION_HEADER: run.session_id}
        first = await first_batch(run)
        headers |= gateway.planner.cache_header(chat, first)
        if body.stream_format == "json":
            reply = await collect(run, first)
            finish = {
                "session_id": run.session_id,
                "content": reply.content,
                "finish_reason": reply.finish_reason,
                "reasoning_content": reply.reasoning_content or None,
                "tool_calls": reply.tool_call_list(),
                "citations": reply.citations,
                "usage": reply.usage,
                "error": reply.error,
            }
            status = reply.error.get("status_code", 502) if reply.error else 200
            return JSONResponse(finish, status_code=status, headers=headers)
        batches = apply_mode(chain(first, run), generator)
        if body.resumable:
            events = gateway.detach(batches, run.close).events()
            return stream_response(events, noop, body.stream_format, headers, gateway.keepalive_s)
        return stream_response(batches, run.close, body.stream_format, headers, gateway.keepalive_s)

    async def interleaved(body: StreamingChatBody, user_id: str, session_id: str | None) -> Response:
        """One request to every provider in ``provider_ids``, each in its own session, merged as they stream."""
        if len(body.provider_ids) < 2:
            raise InvalidRequest("interleaved mode needs at least two provider_ids", param="provider_ids")
        if body.stream_format == "json":
            raise InvalidRequest("interleaved mode streams: use sse, ndjson or text", param="stream_format")
        runs: dict[str, RunStream] = {}
        try:
            for provider_id in body.provider_ids:
                chat = await gateway.chat_request(body, None, provider_id)
                per_provider = f"{session_id}.{provider_id}" if session_id else None
                runs[provider_id] = await gateway.open_run(session_id=per_provider, user_id=user_id, request=chat)
        except BaseException:
            await asyncio.gather(*(run.close() for run in runs.values()))
            raise

        async def close() -> None:
            await asyncio.gather(*(run.close() for run in runs.values()))

        headers = {SESSION_HEADER: ",".join(run.session_id for run in runs.values())}
        merged = interleave({provider: run.batches for provider, run in runs.items()})
        return stream_response(merged, close, body.stream_format, headers, gateway.keepalive_s)

    async def resume(request: Request) -> Response:
        """``Last-Event-ID`` (or ``?after=``): the events the caller missed, then the live tail."""
        header = request.headers.get("last-event-id")
        param, value = ("Last-Event-ID", header) if header is not None else ("after", request.query_params.get("after"))
        try:
            cursor = Cursor.parse(value or 0)
        except ValueError:
            raise InvalidRequest(f"{param} must be an event id from this run", param=param) from None
        batches = await gateway.run_events(request.path_params["run_id"], caller(request), cursor)
        return event_stream(encoded(batches, noop, encode_sse), gateway.keepalive_s, SSE_HEADERS)

    return [
        Route("/api/streaming/chat", streaming_chat, methods=["POST"]),
        Route("/api/streaming/runs/{run_id}/events", resume, methods=["GET"]),
    ]
