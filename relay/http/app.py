"""The ingress: a plain Starlette app over a ``Backend``. Ray Serve only wraps it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from relay.config import ProviderConfig
from relay.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RelayError,
    as_relay_error,
    from_event,
)
from relay.http.auth import Authenticator, AuthMiddleware, caller, require_admin
from relay.http.detached import DetachedRun
from relay.http.encoders import OpenAIChunkEncoder, encode_ndjson, encode_sse, encode_text, openai_completion
from relay.http.health import probe_routes
from relay.http.io import USER_HEADER, error_response, read_json
from relay.http.limits import LimitClient, LocalLimits, check_size, metered
from relay.http.openapi import openapi_route
from relay.http.playground import playground_routes
from relay.http.schemas import (
    SESSION_ID_PATTERN,
    ChatCompletionBody,
    MessagesBody,
    RegisterProviderBody,
    StreamingChatBody,
    _ChatBase,
    parse_body,
    to_chat_request,
    validation_error,
)
from relay.http.sessions_api import session_routes
from relay.http.websocket import WebSocketManager
from relay.logs import REQUEST_ID, RequestIdMiddleware
from relay.modes import GeneratorMode, apply_mode, check_mode, interleave
from relay.providers import adapter_class
from relay.providers.media import MediaPolicy, normalize_messages
from relay.reply import Reply
from relay.request import ChatRequest, Target
from relay.session.backend import Backend, Turn
from relay.session.planner import TurnPlanner
from relay.session.runlog import Cursor, RunNotLive
from relay.wire.anthropic import (
    AnthropicEncoder,
    anthropic_error_body,
    anthropic_message,
    from_anthropic_messages,
    from_anthropic_params,
)

__all__ = ["build_app", "SESSION_HEADER", "USER_HEADER"]

log = logging.getLogger("relay.ingress")

SESSION_HEADER = "X-Session-Id"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _session_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _SESSION_ID.match(value):
        raise InvalidRequest(f"Invalid {SESSION_HEADER}: use 1-128 letters, digits or _.:-", param=SESSION_HEADER)
    return value


async def _first_batch(turn: Turn) -> list[dict[str, Any]]:
    """Wait for the first content before the headers go out, so an early failure gets its real status.

    Status events (retrying, fallback) that come before it are held and sent with it.
    """
    held: list[dict[str, Any]] = []
    try:
        while True:
            try:
                batch = await anext(turn.batches)
            except StopAsyncIteration:
                return held
            held.extend(batch)
            if any(event["type"] != "status" for event in batch):
                break
    except BaseException:
        await turn.close()
        raise
    first = next(event for event in held if event["type"] != "status")
    if first["type"] == "error":
        await turn.close()
        raise _RunFailed(first, turn.session_id)
    return held


class _RunFailed(Exception):
    """The run failed before its first token; the session (and its failed run) still exists."""

    def __init__(self, event: dict[str, Any], session_id: str) -> None:
        super().__init__(event["message"])
        self.event = event
        self.session_id = session_id


async def _chain(first: list[dict[str, Any]], turn: Turn) -> AsyncIterator[list[dict[str, Any]]]:
    if first:
        yield first
    async for batch in turn.batches:
        yield batch


async def _encode(
    batches: AsyncIterator[list[dict[str, Any]]],
    close: Callable[[], Awaitable[None]],
    encode: Callable[[list[dict[str, Any]]], bytes],
) -> AsyncIterator[bytes]:
    try:
        async for batch in batches:
            yield encode(batch)
    finally:
        await close()


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
    def __init__(self, backend: Backend, limits: LimitClient | None = None) -> None:
        self.backend = backend
        settings = backend.settings
        self.limits = limits or LocalLimits(settings.limits)
        self.media = MediaPolicy(tuple(Path(d) for d in settings.media_dirs))
        self.admin_key_env = settings.admin_key_env
        self.configured = {p.provider_id for p in settings.providers}
        self.websockets: WebSocketManager | None = None
        self.draining: set[asyncio.Task[None]] = set()
        self.planner = TurnPlanner(settings, backend.store)

    def _require_admin(self, request: Request) -> None:
        """Admin routes need an admin key when auth is on; on the loopback default the local user is admin."""
        require_admin(request, self.admin_key_env)

    async def open_turn(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> Turn:
        """A turn within the caller's limits: sizes checked, a stream slot leased, its tokens charged when it ends."""
        limits = self.backend.settings.limits
        stored = self.backend.store.count_messages(session_id) if session_id and limits.max_session_messages else None
        check_size(limits, request.messages, stored)
        request.request_id = request.request_id or REQUEST_ID.get()
        lease = (await self.limits.acquire(user_id)).raise_if_refused()
        try:
            turn = await self.backend.open_turn(session_id=session_id, user_id=user_id, request=request)
        except BaseException:
            self.limits.release(lease, 0)
            raise
        # The request id explicitly: a resumable run opens in a context of its own, without the request's.
        context = {"request_id": request.request_id, "session_id": turn.session_id, "user_id": user_id}
        log.info("turn opened", extra=context | {"provider": request.provider})
        used = [0]

        async def close() -> None:
            nonlocal lease
            try:
                await turn.close()
            finally:
                if lease:
                    self.limits.release(lease, used[0])
                    lease = ""

        return Turn(turn.session_id, metered(turn.batches, limits.request_timeout_s, used), close)

    async def chat_request(
        self,
        body: _ChatBase,
        model: str | None,
        provider_id: str | None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> ChatRequest:
        """Resolve the provider (or route) and its fallback chain, enable the turn's server-side tools, and refuse
        unsupported features before any upstream call."""
        route = self.planner.route(model, provider_id)
        if route is not None:
            plan, providers = await self.planner.route_plan(route, self._resolve)
            first = plan.pools[0]
            chat = to_chat_request(body, provider=first.provider, model=first.model, media=self.media)
            chat.route, chat.pool_app = plan, first.pool_app
            fallbacks = body.fallbacks or route.fallbacks
            self.planner.apply_cache(chat, route)
        else:
            provider, resolved = await self._resolve(model, provider_id)
            chat = to_chat_request(body, provider=provider.provider_id, model=resolved, media=self.media)
            chat.pool_app = provider.pool_app
            fallbacks, providers = body.fallbacks or provider.fallbacks, [provider]
        chat.request_id = REQUEST_ID.get()
        for i, name in enumerate(fallbacks):
            try:
                fallback, fallback_model = await self._resolve(name, None)
            except NotFound:
                raise InvalidRequest(f"Unknown fallback provider '{name}'", param=f"fallbacks[{i}]") from None
            chat.fallbacks.append(Target(fallback.provider_id, fallback_model, fallback.pool_app))
        self.planner.enable_tools(chat, body.relay_tools, session_id, user_id)
        for provider in providers:
            adapter_class(provider).check_features(provider, chat)
        return chat

    async def _resolve(self, model: str | None, provider_id: str | None) -> tuple[ProviderConfig, str]:
        """``provider_id`` names a pool; ``model`` names a pool, ``pool/upstream-model``, or a pool's model."""
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
                prefix, _, rest = model.partition("/")
                found = next((p for p in providers if rest and p.provider_id == prefix), None)
                if found:  # "provider/model", as LiteLLM spells it
                    return found, rest
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
        body = parse_body(ChatCompletionBody, await read_json(request))
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")
        session_id, user_id = _session_id(request.headers.get(SESSION_HEADER)), caller(request, body.user)
        chat = await self.chat_request(body, body.model, None, session_id=session_id, user_id=user_id)
        turn = await self.open_turn(session_id=session_id, user_id=user_id, request=chat)
        headers = {SESSION_HEADER: turn.session_id}
        first = await _first_batch(turn)
        headers |= self.planner.cache_header(chat, first)
        if not body.stream:
            reply = await _collect(turn, first)
            if reply.error:  # a non-streamed reply is whole or an error; partial text stays in the stored run
                return error_response(from_event(reply.error), headers)
            return JSONResponse(openai_completion(reply, body.model, relay_events=body.relay_events), headers=headers)
        encoder = OpenAIChunkEncoder(
            body.model,
            include_usage=bool((body.stream_options or {}).get("include_usage")),
            server_tools=frozenset(chat.tools.names if chat.tools else ()),
            relay_events=body.relay_events,
        )
        return StreamingResponse(
            _encode(_chain(first, turn), turn.close, encoder.encode),
            media_type="text/event-stream",
            headers=headers | SSE_HEADERS,
        )

    async def streaming_chat(self, request: Request) -> Response:
        body = parse_body(StreamingChatBody, await read_json(request))
        user_id = caller(request, body.user_id)
        session_id = _session_id(body.session_id or request.headers.get(SESSION_HEADER))
        generator = body.generator()
        check_mode(generator)
        if generator.mode == GeneratorMode.INTERLEAVED:
            return await self._interleaved(body, user_id, session_id)
        chat = await self.chat_request(body, body.model, body.provider_id, session_id=session_id, user_id=user_id)
        opening = self.open_turn(session_id=session_id, user_id=user_id, request=chat)
        if body.resumable:
            # Opened outside the request's context: the run must not be a child that the request's cancellation
            # reaches when its caller drops (Ray Serve cancels a request's sub-tasks recursively).
            turn = await asyncio.create_task(opening, context=contextvars.Context())
        else:
            turn = await opening
        headers = {SESSION_HEADER: turn.session_id}
        first = await _first_batch(turn)
        headers |= self.planner.cache_header(chat, first)
        if body.stream_format == "json":
            reply = await _collect(turn, first)
            finish = {
                "session_id": turn.session_id,
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
        batches = apply_mode(_chain(first, turn), generator)
        if body.resumable:
            return _stream_response(self.detach(batches, turn.close).events(), _noop, body.stream_format, headers)
        return _stream_response(batches, turn.close, body.stream_format, headers)

    def detach(self, batches: AsyncIterator[list[dict[str, Any]]], close: Callable[[], Awaitable[None]]) -> DetachedRun:
        """A resumable run, consumed by a task of its own so that a dropped caller cannot cancel it."""
        run = DetachedRun(batches, close)
        self.draining.add(run.task)
        run.task.add_done_callback(self.draining.discard)
        return run

    async def run_events(self, run_id: str, user_id: str, cursor: Cursor) -> AsyncIterator[list[dict[str, Any]]]:
        """A run's events after ``cursor``: the live tail while it streams, else replayed from the store."""
        run = self.backend.store.get_run(run_id)
        if run is None or (self.backend.store.get_session(run["session_id"]) or {}).get("user_id") != user_id:
            raise NotFound(f"Run '{run_id}' not found", param="run_id")
        if run["status"] == "running":
            try:
                return cursor.skip_seen(await self.backend.tail(run["session_id"], run_id, cursor.event))
            except RunNotLive:
                pass
        replay = self.backend.store.run_events(run_id, cursor.event)

        async def once() -> AsyncIterator[list[dict[str, Any]]]:
            if replay:
                yield replay

        return cursor.skip_seen(once())

    async def resume(self, request: Request) -> Response:
        """``Last-Event-ID`` (or ``?after=``): the events the caller missed, then the live tail."""
        header = request.headers.get("last-event-id")
        param, value = ("Last-Event-ID", header) if header is not None else ("after", request.query_params.get("after"))
        try:
            cursor = Cursor.parse(value or 0)
        except ValueError:
            raise InvalidRequest(f"{param} must be an event id from this run", param=param) from None
        batches = await self.run_events(request.path_params["run_id"], caller(request), cursor)

        return StreamingResponse(
            _encode(batches, _noop, encode_sse), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def _interleaved(self, body: StreamingChatBody, user_id: str, session_id: str | None) -> Response:
        """One request to every provider in ``provider_ids``, each in its own session, merged as they stream."""
        if len(body.provider_ids) < 2:
            raise InvalidRequest("interleaved mode needs at least two provider_ids", param="provider_ids")
        if body.stream_format == "json":
            raise InvalidRequest("interleaved mode streams: use sse, ndjson or text", param="stream_format")
        turns: dict[str, Turn] = {}
        try:
            for provider_id in body.provider_ids:
                chat = await self.chat_request(body, None, provider_id)
                per_provider = f"{session_id}.{provider_id}" if session_id else None
                turns[provider_id] = await self.open_turn(
                    session_id=per_provider, user_id=user_id, request=chat
                )
        except BaseException:
            await asyncio.gather(*(turn.close() for turn in turns.values()))
            raise

        async def close() -> None:
            await asyncio.gather(*(turn.close() for turn in turns.values()))

        headers = {SESSION_HEADER: ",".join(turn.session_id for turn in turns.values())}
        merged = interleave({provider: turn.batches for provider, turn in turns.items()})
        return _stream_response(merged, close, body.stream_format, headers)

    async def anthropic_messages(self, request: Request) -> Response:
        """The Anthropic Messages API over any pool; errors in Anthropic's shape, not OpenAI's."""
        try:
            body = parse_body(MessagesBody, await read_json(request))
            provider, model = await self._resolve(body.model, None)
            sent = body.model_dump(exclude_unset=True)
            chat = ChatRequest(
                provider=provider.provider_id,
                model=model,
                pool_app=provider.pool_app,
                messages=normalize_messages(from_anthropic_messages(sent.get("system"), sent["messages"]), self.media),
                params=from_anthropic_params(sent),
                user=(body.metadata or {}).get("user_id"),
            )
            adapter_class(provider).check_features(provider, chat)
            turn = await self.open_turn(
                session_id=_session_id(request.headers.get(SESSION_HEADER)), user_id=caller(request), request=chat
            )
            headers = {SESSION_HEADER: turn.session_id}
            first = await _first_batch(turn)
        except _RunFailed as failed:
            return _anthropic_error(from_event(failed.event), {SESSION_HEADER: failed.session_id})
        except Exception as exc:
            if not isinstance(exc, RelayError):
                log.exception("unhandled error on POST /v1/messages")
            return _anthropic_error(as_relay_error(exc))
        if not body.stream:
            reply = await _collect(turn, first)
            if reply.error:
                return _anthropic_error(from_event(reply.error), headers)
            return JSONResponse(anthropic_message(reply, body.model), headers=headers)
        encoder = AnthropicEncoder(body.model)
        return StreamingResponse(
            _encode(_chain(first, turn), turn.close, encoder.encode),
            media_type="text/event-stream",
            headers=headers | SSE_HEADERS,
        )

    async def models(self, request: Request) -> Response:
        data = []
        for provider in await self.backend.providers(refresh=True):
            for model in dict.fromkeys([provider.provider_id, provider.default_model, *provider.models]):
                data.append({"id": model, "object": "model", "created": 0, "owned_by": provider.provider_id})
        return JSONResponse({"object": "list", "data": data})

    async def register_provider(self, request: Request) -> Response:
        self._require_admin(request)
        body = parse_body(RegisterProviderBody, await read_json(request))
        try:
            config = body.to_config()
        except ValidationError as exc:
            raise validation_error(exc) from None
        if any(p.provider_id == config.provider_id for p in await self.backend.providers(refresh=True)):
            raise Conflict(f"Provider '{config.provider_id}' is already registered", param="provider_id")
        adapter_class(config)
        await self.backend.register_provider(config)
        return JSONResponse(_public(config, self.configured) | {"status": "registered"}, status_code=201)

    async def list_providers(self, request: Request) -> Response:
        providers = await self.backend.providers(refresh=True)
        return JSONResponse({"object": "list", "data": [_public(p, self.configured) for p in providers]})

    async def delete_provider(self, request: Request) -> Response:
        self._require_admin(request)
        provider_id = request.path_params["provider_id"]
        await self.backend.unregister_provider(provider_id)
        return JSONResponse({"provider_id": provider_id, "status": "deleted"})

    async def provider_health(self, request: Request) -> Response:
        self._require_admin(request)
        pools = await self.backend.provider_health()
        health = {"status": "ok" if all(p["ok"] for p in pools) else "degraded", "providers": pools}
        return JSONResponse(health | ({"routes": self.planner.health(pools)} if self.planner.routes else {}))

    async def stats(self, request: Request) -> Response:
        """The seed's ``get_system_stats``: sessions, actors, pools, WebSocket connections."""
        self._require_admin(request)
        stats = await self.backend.stats()
        if self.websockets is not None:
            stats["websocket"] = self.websockets.get_statistics()
        return JSONResponse(stats)


async def _noop() -> None:
    return None


def _anthropic_error(error: RelayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(anthropic_error_body(error), status_code=error.status_code, headers=headers)


def _stream_response(
    batches: AsyncIterator[list[dict[str, Any]]],
    close: Callable[[], Awaitable[None]],
    stream_format: str,
    headers: dict[str, str],
) -> StreamingResponse:
    if stream_format == "ndjson":
        return StreamingResponse(
            _encode(batches, close, encode_ndjson), media_type="application/x-ndjson", headers=headers
        )
    if stream_format == "text":
        return StreamingResponse(
            _encode(batches, close, encode_text), media_type="text/plain; charset=utf-8", headers=headers
        )
    return StreamingResponse(
        _encode(batches, close, encode_sse), media_type="text/event-stream", headers=headers | SSE_HEADERS
    )


def _public(config: ProviderConfig, configured: set[str]) -> dict[str, Any]:
    """What callers may see of a provider: never its key, only the variable that holds one."""
    return {
        "provider_id": config.provider_id,
        "provider_type": config.provider_type,
        "model": config.default_model,
        "models": config.models,
        "base_url": config.base_url,
        "api_key_env": config.api_key_env,
        "fallbacks": config.fallbacks,
        "features": sorted(adapter_class(config).features_for(config)) if _has_adapter(config) else [],
        "num_replicas": config.num_replicas,
        "registered": config.provider_id not in configured,
    }


def _has_adapter(config: ProviderConfig) -> bool:
    try:
        adapter_class(config)
    except RelayError:
        return False
    return True


async def _relay_error(request: Request, exc: Exception) -> Response:
    return error_response(as_relay_error(exc))


async def _run_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _RunFailed)
    return error_response(from_event(exc.event), {SESSION_HEADER: exc.session_id})


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
    return error_response(RelayError("Internal server error"))


def build_app(backend: Backend, limits: LimitClient | None = None) -> Starlette:
    """``limits``: the cluster's limiter client; in-process a local one."""
    ingress = Ingress(backend, limits)
    websockets = WebSocketManager(ingress)
    ingress.websockets = websockets
    routes: list[BaseRoute] = [
        WebSocketRoute("/api/streaming/ws/{user_id}", websockets.handle),
        Route("/v1/chat/completions", ingress.chat_completions, methods=["POST"]),
        Route("/v1/models", ingress.models, methods=["GET"]),
        Route("/v1/messages", ingress.anthropic_messages, methods=["POST"]),
        Route("/api/streaming/chat", ingress.streaming_chat, methods=["POST"]),
        Route("/api/streaming/runs/{run_id}/events", ingress.resume, methods=["GET"]),
        Route("/api/streaming/providers", ingress.list_providers, methods=["GET"]),
        Route("/api/streaming/providers/register", ingress.register_provider, methods=["POST"]),
        Route("/api/streaming/providers/health", ingress.provider_health, methods=["GET"]),
        Route("/api/streaming/providers/{provider_id}", ingress.delete_provider, methods=["DELETE"]),
        *session_routes(backend),
        Route("/api/stats", ingress.stats, methods=["GET"]),
        *probe_routes(backend),
        *playground_routes(),
    ]
    routes.append(openapi_route(routes))
    handlers: dict[Any, Any] = {
        RelayError: _relay_error,
        _RunFailed: _run_failed,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    authenticator = Authenticator(backend.store, backend.settings.auth, backend.settings.admin_key_env)
    middleware = [Middleware(RequestIdMiddleware), Middleware(AuthMiddleware, authenticator=authenticator)]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
