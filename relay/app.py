"""The ingress: a plain Starlette app over a ``Backend``. Ray Serve only wraps it."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .backend import Backend, Turn
from .config import ProviderConfig
from .encoders import OpenAIChunkEncoder, encode_ndjson, encode_sse, openai_completion
from .errors import InvalidRequest, NotFound, RelayError, as_relay_error, from_event
from .reply import Reply
from .schemas import (
    ChatCompletionBody,
    RegisterProviderBody,
    StreamingChatBody,
    parse_body,
    to_chat_request,
)

__all__ = ["build_app", "SESSION_HEADER", "USER_HEADER"]

log = logging.getLogger("relay.ingress")

SESSION_HEADER = "X-Session-Id"
USER_HEADER = "X-User-Id"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _error_response(error: RelayError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.retry_after:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=headers)


async def _json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None


def _session_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _SESSION_ID.match(value):
        raise InvalidRequest(f"Invalid {SESSION_HEADER}: use 1-128 letters, digits or _.:-", param=SESSION_HEADER)
    return value


def _user_id(request: Request, fallback: str | None) -> str:
    return request.headers.get(USER_HEADER) or fallback or "anonymous"


async def _first_batch(turn: Turn) -> list[dict[str, Any]]:
    """Wait for the first batch before the headers go out, so an early failure gets its real status."""
    try:
        first = await anext(turn.batches)
    except StopAsyncIteration:
        return []
    except BaseException:
        await turn.close()
        raise
    if first and first[0]["type"] == "error":
        await turn.close()
        raise _RunFailed(first[0], turn.session_id)
    return first


class _RunFailed(Exception):
    """The run failed before its first token; the session (and its failed run) still exists."""

    def __init__(self, event: dict[str, Any], session_id: str) -> None:
        super().__init__(event["message"])
        self.event = event
        self.session_id = session_id


async def _encode(
    turn: Turn, first: list[dict[str, Any]], encode: Callable[[list[dict[str, Any]]], bytes]
) -> AsyncIterator[bytes]:
    try:
        if first:
            yield encode(first)
        async for batch in turn.batches:
            yield encode(batch)
    finally:
        await turn.close()


async def _collect(turn: Turn, first: list[dict[str, Any]]) -> Reply:
    reply = Reply()
    reply.extend(first)
    try:
        async for batch in turn.batches:
            reply.extend(batch)
    finally:
        await turn.close()
    return reply


class Ingress:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def _resolve(self, model: str | None, provider_id: str | None) -> tuple[ProviderConfig, str]:
        """``provider_id`` names a pool; ``model`` names a pool or one of its models."""
        for refresh in (False, True):
            providers = await self.backend.providers(refresh=refresh)
            if provider_id:
                found = next((p for p in providers if p.provider_id == provider_id), None)
                if found:
                    return found, model or found.default_model
            elif model:
                found = next((p for p in providers if p.provider_id == model), None)
                if found:
                    return found, found.default_model
                found = next((p for p in providers if p.serves(model)), None)
                if found:
                    return found, model
            else:
                return providers[0], providers[0].default_model
        if provider_id:
            raise NotFound(f"Unknown provider '{provider_id}'", param="provider_id", code="provider_not_found")
        raise NotFound(
            f"The model '{model}' does not exist; GET /v1/models lists them", param="model", code="model_not_found"
        )

    async def chat_completions(self, request: Request) -> Response:
        body = parse_body(ChatCompletionBody, await _json(request))
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")
        provider, model = await self._resolve(body.model, None)
        chat = to_chat_request(body, provider=provider.provider_id, model=model)
        turn = await self.backend.open_turn(
            session_id=_session_id(request.headers.get(SESSION_HEADER)),
            user_id=_user_id(request, body.user),
            request=chat,
        )
        headers = {SESSION_HEADER: turn.session_id}
        first = await _first_batch(turn)
        if not body.stream:
            reply = await _collect(turn, first)
            if reply.error and not reply.text:
                return _error_response(from_event(reply.error), headers)
            return JSONResponse(openai_completion(reply, body.model), headers=headers)
        encoder = OpenAIChunkEncoder(body.model, include_usage=bool((body.stream_options or {}).get("include_usage")))
        return StreamingResponse(
            _encode(turn, first, encoder.encode), media_type="text/event-stream", headers=headers | SSE_HEADERS
        )

    async def streaming_chat(self, request: Request) -> Response:
        body = parse_body(StreamingChatBody, await _json(request))
        provider, model = await self._resolve(body.model, body.provider_id)
        chat = to_chat_request(body, provider=provider.provider_id, model=model)
        session_id = _session_id(body.session_id or request.headers.get(SESSION_HEADER))
        turn = await self.backend.open_turn(
            session_id=session_id, user_id=_user_id(request, body.user_id), request=chat
        )
        headers = {SESSION_HEADER: turn.session_id}
        first = await _first_batch(turn)
        if body.stream_format == "json":
            reply = await _collect(turn, first)
            finish = {
                "session_id": turn.session_id,
                "content": reply.content,
                "finish_reason": reply.finish_reason,
                "reasoning_content": reply.reasoning_content or None,
                "tool_calls": reply.tool_call_list(),
                "usage": reply.usage,
                "error": reply.error,
            }
            return JSONResponse(finish, headers=headers)
        if body.stream_format == "ndjson":
            return StreamingResponse(
                _encode(turn, first, encode_ndjson), media_type="application/x-ndjson", headers=headers
            )
        return StreamingResponse(
            _encode(turn, first, encode_sse), media_type="text/event-stream", headers=headers | SSE_HEADERS
        )

    async def models(self, request: Request) -> Response:
        data = []
        for provider in await self.backend.providers(refresh=True):
            for model in dict.fromkeys([provider.provider_id, provider.default_model, *provider.models]):
                data.append({"id": model, "object": "model", "created": 0, "owned_by": provider.provider_id})
        return JSONResponse({"object": "list", "data": data})

    async def session_messages(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 1, 1000)
        before = _int_param(request, "before", 0, None)
        messages = await self.backend.messages(
            request.path_params["session_id"], _user_id(request, None), limit=limit, before=before
        )
        return JSONResponse({"session_id": request.path_params["session_id"], "messages": messages})

    async def session_runs(self, request: Request) -> Response:
        runs = await self.backend.runs(request.path_params["session_id"], _user_id(request, None))
        return JSONResponse({"session_id": request.path_params["session_id"], "runs": runs})

    async def register_provider(self, request: Request) -> Response:
        body = parse_body(RegisterProviderBody, await _json(request))
        if any(p.provider_id == body.provider_id for p in await self.backend.providers(refresh=True)):
            raise InvalidRequest(f"Provider '{body.provider_id}' is already registered", param="provider_id")
        config = ProviderConfig(
            provider_id=body.provider_id,
            provider_type=body.provider_type,
            model=body.model_name,
            base_url=body.base_url,
            api_key=body.api_key,
            num_replicas=body.num_replicas,
            max_ongoing_requests=body.max_ongoing_requests,
            options=body.options,
        )
        await self.backend.register_provider(config)
        return JSONResponse(
            {
                "provider_id": config.provider_id,
                "provider_type": config.provider_type,
                "model": config.default_model,
                "status": "registered",
            },
            status_code=201,
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await self.backend.stats())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def _int_param(request: Request, name: str, low: int, high: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer", param=name) from None
    if value < low or (high is not None and value > high):
        raise InvalidRequest(f"'{name}' must be between {low} and {high or 'any'}", param=name)
    return value


async def _relay_error(request: Request, exc: Exception) -> Response:
    return _error_response(as_relay_error(exc))


async def _run_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _RunFailed)
    return _error_response(from_event(exc.event), {SESSION_HEADER: exc.session_id})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error_type = {404: "not_found_error", 405: "invalid_request_error"}.get(exc.status_code, "api_error")
    body = {
        "error": {
            "type": error_type,
            "message": f"{request.method} {request.url.path}: {exc.detail}",
            "param": None,
            "code": None,
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(RelayError("Internal server error"))


def build_app(backend: Backend) -> Starlette:
    ingress = Ingress(backend)
    routes = [
        Route("/v1/chat/completions", ingress.chat_completions, methods=["POST"]),
        Route("/v1/models", ingress.models, methods=["GET"]),
        Route("/api/streaming/chat", ingress.streaming_chat, methods=["POST"]),
        Route("/api/streaming/providers/register", ingress.register_provider, methods=["POST"]),
        Route("/api/sessions/{session_id}/messages", ingress.session_messages, methods=["GET"]),
        Route("/api/sessions/{session_id}/runs", ingress.session_runs, methods=["GET"]),
        Route("/api/stats", ingress.stats, methods=["GET"]),
        Route("/healthz", ingress.healthz, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        RelayError: _relay_error,
        _RunFailed: _run_failed,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    return Starlette(routes=routes, exception_handlers=handlers)
