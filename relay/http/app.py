"""The ingress: a plain Starlette app over a ``Backend``. Ray Serve only wraps it (``actors.ingress``)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute

from relay import tracing
from relay.errors import RelayError, as_relay_error, from_event
from relay.http.anthropic_api import anthropic_routes
from relay.http.auth import Authenticator, AuthMiddleware
from relay.http.budgets import BudgetHeaders
from relay.http.conversations_api import conversation_routes
from relay.http.gateway import SESSION_HEADER, Gateway, RunFailed
from relay.http.health import probe_routes
from relay.http.io import USER_HEADER, error_response
from relay.http.limits import UserLimitsClient
from relay.http.openai_api import openai_routes
from relay.http.openapi import openapi_route
from relay.http.playground import playground_routes
from relay.http.providers_api import provider_routes
from relay.http.responses_api import responses_routes
from relay.http.sessions_api import session_routes
from relay.http.spend_api import spend_routes
from relay.http.streaming_api import streaming_routes
from relay.http.websocket import WebSocketManager
from relay.logs import RequestIdMiddleware
from relay.session.backend import Backend

__all__ = ["build_app", "SESSION_HEADER", "USER_HEADER"]

log = logging.getLogger("relay.ingress")


async def _relay_error(request: Request, exc: Exception) -> Response:
    return error_response(as_relay_error(exc))


async def _run_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RunFailed)
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


def build_app(backend: Backend, limits: UserLimitsClient | None = None) -> Starlette:
    """``limits``: the cluster's limiter client; in-process a local one."""
    gateway = Gateway(backend, limits)
    websockets = WebSocketManager(gateway)
    gateway.stats["websocket"] = websockets.get_statistics
    routes: list[BaseRoute] = [
        WebSocketRoute("/api/streaming/ws/{user_id}", websockets.handle),
        *openai_routes(gateway),
        *responses_routes(gateway),
        *anthropic_routes(gateway),
        *streaming_routes(gateway),
        *provider_routes(gateway),
        *spend_routes(gateway),
        *session_routes(backend),
        *conversation_routes(backend),
        *probe_routes(backend),
        *playground_routes(),
    ]
    routes.append(openapi_route(routes))
    handlers: dict[Any, Any] = {
        RelayError: _relay_error,
        RunFailed: _run_failed,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    authenticator = Authenticator(backend.store, backend.settings.auth, backend.settings.admin_key_env)
    middleware = [
        Middleware(RequestIdMiddleware),
        *tracing.ingress_middleware(),
        Middleware(AuthMiddleware, authenticator=authenticator),
        Middleware(BudgetHeaders),
    ]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
