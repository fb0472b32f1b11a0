"""Who is calling: per-user API keys, checked by an ASGI middleware before any route runs.

Auth is on once the store holds a key (``relay keys create``), or when the
settings say ``auth: required``; then every route but the probes, the OpenAPI
document and the playground's static files needs a key, ``X-User-Id`` and body
``user`` fields no longer name the caller, and the key's user owns every session
and memory the request touches. Without keys on a loopback bind Relay stays
open, as in the quick start, and the local caller is the admin.

A key is ``rk_`` and 32 random bytes (base64url). The store keeps only its
SHA-256: a slow or salted hash protects low-entropy passwords against guessing,
but nobody can guess 256 random bits, so a plain digest is as strong and costs
microseconds per request (GitHub and Stripe tokens work the same way).

Callers send ``Authorization: Bearer rk_…`` (the OpenAI SDK's ``api_key``), or
``x-api-key: rk_…`` (the Anthropic SDK's). Browsers cannot set headers on a
WebSocket, so the WebSocket also takes ``?api_key=rk_…``; the middleware
removes it from the query string before the app sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

import orjson
from starlette.requests import HTTPConnection
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.errors import AuthenticationFailed, PermissionDenied
from relay.wire.anthropic import anthropic_error_body

if TYPE_CHECKING:
    from relay.store import Store

from relay.config import AuthSettings

__all__ = [
    "KEY_PREFIX",
    "Identity",
    "Authenticator",
    "AuthMiddleware",
    "new_key",
    "hash_key",
    "identity_of",
    "require_admin",
    "CALLER",
]

log = logging.getLogger("relay.http.auth")

KEY_PREFIX = "rk_"
# Answer without a key: the probes, the API description, the playground's static page.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/"})
PUBLIC_PREFIXES = ("/static/",)
_SCOPE_KEY = "relay.identity"
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    is_admin: bool
    key_id: str
    # The key's spending budget (relay.spend.ledger), None for none.
    budget_usd: float | None = None
    budget_period: str = "month"


# The request's identity, for code that sees no Starlette request (the gateway opening a run charges the key):
# set by the middleware for exactly the app call, so a detached run's task inherits it.
CALLER: ContextVar[Identity | None] = ContextVar("relay_caller", default=None)


def new_key() -> tuple[str, str, str]:
    """A fresh key: (the key, shown once; its SHA-256, stored; a prefix to recognise it by)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key), key[:10]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    """Keys to identities, with a short cache so that a request costs no store query."""

    def __init__(self, store: Store, settings: AuthSettings, admin_key_env: str = "RELAY_ADMIN_KEY") -> None:
        self.store = store
        self.settings = settings
        self.admin_key_env = admin_key_env
        self._on = settings.mode == "required"
        self._checked = -math.inf
        # One store read at a time: requests that arrive while it runs wait for its answer. Answering them from
        # the stale "off" instead let a fresh replica serve its first burst without a key (found by
        # tests/integration/test_haproxy_ingress.py, whose ingress replicas start under load).
        self._checking = asyncio.Lock()
        self._cache: dict[str, tuple[float, Identity | None]] = {}

    async def enabled(self) -> bool:
        """On for good once a key exists: revoking every key must not open the server again."""
        if self._on:
            return True
        if time.monotonic() - self._checked >= self.settings.cache_ttl_s:
            async with self._checking:
                if not self._on and time.monotonic() - self._checked >= self.settings.cache_ttl_s:
                    self._on = await self.store.offload(self.store.has_api_keys)
                    self._checked = time.monotonic()
        return self._on

    async def authenticate(self, key: str) -> Identity | None:
        admin_key = os.environ.get(self.admin_key_env)
        if admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
            return Identity("admin", True, self.admin_key_env)
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.settings.cache_ttl_s:
            return cached[1]
        row = await self.store.offload(self.store.api_key_by_hash, digest)
        identity = (
            Identity(row["user_id"], row["is_admin"], row["key_id"], row["budget_usd"], row["budget_period"] or "month")
            if row
            else None
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (now, identity)
        return identity


def _presented_key(scope: Scope) -> str | None:
    headers = dict(scope["headers"])
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    api_key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    if api_key:
        return api_key
    if scope["type"] == "websocket":
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        found = [value for name, value in query if name == "api_key"]
        if found:
            scope["query_string"] = urlencode([(n, v) for n, v in query if n != "api_key"]).encode()
            return found[0] or None
    return None


class AuthMiddleware:
    """Plain ASGI: resolve the key into ``scope["relay.identity"]`` or answer 401 before the app runs."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _public(scope) or not await self.authenticator.enabled():
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope)
        identity = await self.authenticator.authenticate(key) if key else None
        if identity is None:
            method, reason = scope.get("method", "WS"), "an unknown" if key else "no"
            log.info("refused %s %s: %s API key", method, get_route_path(scope), reason)
            await _refuse(scope, send, wrong=key is not None)
            return
        scope[_SCOPE_KEY] = identity
        token = CALLER.set(identity)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)


def _public(scope: Scope) -> bool:
    path = get_route_path(scope)  # without the root path: Serve may mount Relay under a route prefix
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


async def _refuse(scope: Scope, send: Send, *, wrong: bool) -> None:
    if scope["type"] == "websocket":
        # Before accept, a close is an HTTP 403 on the handshake: browsers show no reason either way.
        await send({"type": "websocket.close", "code": 1008, "reason": "a valid API key is required"})
        return
    message = (
        "The API key is not valid (revoked, or never issued)"
        if wrong
        else "This server requires an API key: send 'Authorization: Bearer rk_...' (relay keys create --user NAME)"
    )
    error = AuthenticationFailed(message, code="invalid_api_key" if wrong else "missing_api_key")
    body = anthropic_error_body(error) if get_route_path(scope) == "/v1/messages" else error.to_body()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="relay"')],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})


def identity_of(connection: HTTPConnection) -> Identity | None:
    """The key's identity when auth is on; None on an open (loopback, keyless) server."""
    identity: Identity | None = connection.scope.get(_SCOPE_KEY)
    return identity


def require_admin(connection: HTTPConnection, admin_key_env: str) -> None:
    """Admin routes: an admin key when auth is on; the env admin key when only that is set; else open."""
    identity = identity_of(connection)
    if identity is not None:
        if not identity.is_admin:
            raise PermissionDenied("This route needs an admin key (relay keys create --user NAME --admin)")
        return
    expected = os.environ.get(admin_key_env)
    if not expected:
        return
    header = connection.headers.get("authorization", "")
    supplied = header[7:] if header.lower().startswith("bearer ") else connection.headers.get("x-admin-key", "")
    if not supplied:
        raise AuthenticationFailed("This route needs the admin key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise PermissionDenied("The admin key is not valid")
