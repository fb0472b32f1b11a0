"""Small HTTP helpers the route modules share: bodies, query parameters, the caller's identity, errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from .errors import InvalidRequest, RelayError

__all__ = ["USER_HEADER", "error_response", "read_json", "int_param", "caller"]

USER_HEADER = "X-User-Id"


def error_response(error: RelayError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.retry_after:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=headers)


async def read_json(request: Request) -> Any:
    body = await request.body()
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None


def int_param(request: Request, name: str, low: int, high: int | None) -> int | None:
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


def caller(request: Request, fallback: str | None = None) -> str:
    """Who is asking: ``X-User-Id`` (or the body's user), else ``anonymous``; auth arrives with issue 8."""
    return request.headers.get(USER_HEADER) or fallback or "anonymous"
