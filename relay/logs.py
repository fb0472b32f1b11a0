"""Structured logs: one JSON object per line, a request id on each, and no key ever written out.

The ingress takes the request id from ``X-Request-Id`` (Ray Serve's proxy sets
one on every request, so Serve's access log and Relay's lines agree) or makes
one. It travels in ``ChatRequest.request_id`` to the session actor and the
provider pool, which set it again in their own processes, so one grep finds a
turn's lines in every process.

Redaction works on the formatted text: Relay keys (``rk_…``), OpenAI and
Anthropic style keys (``sk-…``), bearer tokens, ``api_key``/``x-api-key``/
``authorization`` values, and every provider key this process was told about
(``REDACTOR.add``) become ``***``, whichever library wrote the line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import IO, Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID",
    "REDACTOR",
    "Redactor",
    "RedactingFilter",
    "JsonFormatter",
    "RequestIdMiddleware",
    "LOG_LEVEL_ENV",
    "configure_cli_logging",
    "configure_logging",
    "new_request_id",
    "request_scope",
    "set_request_id",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("relay_request_id", default=None)
_REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MASK = "***"
# The level of the ``relay`` logger in Ray processes, and of ``ray.serve`` when set; `relay serve` sets WARNING
# unless --verbose.
LOG_LEVEL_ENV = "RELAY_LOG_LEVEL"
# Libraries that log every request at INFO: a user of `relay chat` would see them between the lines of the chat.
_CHATTY = ("httpx", "httpcore")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


def set_request_id(request_id: str | None) -> None:
    """For the current task's context (a Ray call's own): a function, because Ray cannot pickle a ContextVar."""
    REQUEST_ID.set(request_id)


@contextlib.contextmanager
def request_scope(request_id: str | None) -> Iterator[None]:
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class Redactor:
    """Masks key-shaped text and the exact secrets it was given; thread-safe enough (rebuilds are atomic)."""

    _PATTERNS = (
        (re.compile(r"\brk_[A-Za-z0-9_-]{6,}"), "rk_" + MASK),
        (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-" + MASK),
        (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1" + MASK),
        (
            re.compile(r"(?i)\b((?:x-api-key|x-admin-key|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)"
                       r"(?!bearer\b)[^\s\"',;}]+"),
            r"\1" + MASK,
        ),
    )

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._exact: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        """Secrets to mask wherever they appear; short ones are ignored (they would mask ordinary words)."""
        fresh = {value for value in values if value and len(value) >= 8} - self._secrets
        if not fresh:
            return
        self._secrets = self._secrets | fresh
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(secret) for secret in ordered))

    def redact(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        for pattern, replacement in self._PATTERNS:
            text = pattern.sub(replacement, text)
        return text


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """For any handler: the message, its arguments and its traceback, redacted before formatting."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra}``, redacted as a whole."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line and not key.startswith("_"):  # Ray adds _ray_timestamp_ns
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return self.redactor.redact(orjson.dumps(line, default=str).decode())


def configure_cli_logging(*, verbose: bool) -> None:
    """In a ``relay`` command: warnings and errors only, unless ``--verbose`` asks for every INFO line too."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _CHATTY:
        logging.getLogger(name).setLevel(level)


def configure_logging(
    secrets: Iterable[str | None] = (), *, level: int | str | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """In a Ray process: JSON lines for ``relay.*`` on stderr, and redaction on every handler already there.

    The level is ``level``, else ``$RELAY_LOG_LEVEL``, else INFO. Idempotent: a second call only adds secrets.
    """
    REDACTOR.add(secrets)
    relay = logging.getLogger("relay")
    for handler in relay.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    relay.addHandler(handler)
    relay.setLevel(level if level is not None else os.environ.get(LOG_LEVEL_ENV, "INFO").upper())
    relay.propagate = False  # Ray's and Serve's handlers would print each line a second time, unformatted
    if LOG_LEVEL_ENV in os.environ:
        # A session actor is no Serve replica, so Serve's logging_config misses the INFO lines its handles log.
        logging.getLogger("ray.serve").setLevel(os.environ[LOG_LEVEL_ENV].upper())
    for name in ("", "ray", "ray.serve"):
        for existing in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in existing.filters):
                existing.addFilter(RedactingFilter())
    return handler


class RequestIdMiddleware:
    """Plain ASGI: the request id for this request's context, and on the response when Serve did not add it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        supplied = next((value for name, value in scope["headers"] if name == _REQUEST_ID_HEADER), None)
        text = supplied.decode("latin-1") if supplied is not None else ""
        request_id = text if _SAFE_ID.match(text) else new_request_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start" and request_id != text:
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with request_scope(request_id):
            await self.app(scope, receive, send_with_id)
