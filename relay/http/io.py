"""Small HTTP helpers the route modules share: bodies, query parameters, the caller's identity, errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from relay.errors import InvalidRequest, PayloadTooLarge, PermissionDenied, RelayError, UnsupportedMediaType

__all__ = ["USER_HEADER", "MAX_BODY_BYTES", "MAX_DEPTH", "error_response", "read_json", "int_param", "caller"]

USER_HEADER = "X-User-Id"
# A body carries at most a few inline media files (relay.providers.media reads up to 20 MiB each, base64 adds a third).
MAX_BODY_BYTES = 32 * 1024 * 1024
# JSON nesting allowed in a body: the store's JSON encoder stops at 255 levels and pickling across Ray near 1,000.
MAX_DEPTH = 64
# SQLite and PostgreSQL integers are 64-bit: a larger query value would fail in the store, not here.
_MAX_INT = 2**63 - 1


def error_response(error: RelayError, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if error.retry_after:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=headers)


async def read_json(request: Request) -> Any:
    """The JSON body: refused unless declared as JSON (a missing Content-Type is taken as JSON), capped in size
    and in depth."""
    media_type = (request.headers.get("content-type") or "application/json").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not accepted; send the body as application/json", param="Content-Type"
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None
    if _too_deep(data):
        raise InvalidRequest(f"The request body nests objects and arrays deeper than {MAX_DEPTH} levels", param="body")
    return data


def _too_deep(data: Any) -> bool:
    stack = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES} bytes", param="body")


def int_param(request: Request, name: str, low: int, high: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an integer", param=name) from None
    if value < low or value > (high or _MAX_INT):
        raise InvalidRequest(f"'{name}' must be between {low} and {high or _MAX_INT}", param=name)
    return value


def caller(request: HTTPConnection, body_user: str | None = None) -> str:
    """Who is asking, by one rule for the ``X-User-Id`` header and a body's ``user_id``.

    With auth on, the key decides: the header is ignored, and a body ``user_id`` may only name the key's own user
    (another user's is a 403 whose ``param`` is ``user_id``: a client that says who it acts for must not be
    silently answered as someone else). Without auth, a body ``user_id`` means what the header means; sent both,
    they must agree (400). Neither: ``anonymous``.
    """
    from relay.http.auth import identity_of  # here, not at the top: auth imports USER_HEADER from this module

    identity = identity_of(request)
    if identity is not None:
        if body_user is not None and body_user != identity.user_id:
            raise PermissionDenied(
                f"This API key acts for '{identity.user_id}'; it cannot act for user_id '{body_user}'",
                param="user_id",
            )
        return identity.user_id
    header = request.headers.get(USER_HEADER)
    if header and body_user is not None and body_user != header:
        raise InvalidRequest(
            f"{USER_HEADER} '{header}' and user_id '{body_user}' name different users; send one", param="user_id"
        )
    return header or body_user or "anonymous"
