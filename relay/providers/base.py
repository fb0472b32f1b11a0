"""The one small seam every provider implements, and what the HTTP-based ones share."""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, ClassVar

import httpx2

from relay.config import ProviderConfig
from relay.errors import ProviderError, ProviderTimeout, RelayError
from relay.request import ChatRequest

__all__ = [
    "BaseProviderAdapter",
    "SDKAdapter",
    "sse_events",
    "sse_stream",
    "transport_error",
    "map_sdk_error",
    "timed_probe",
    "pooled_client",
    "retry_after_header",
]

class BaseProviderAdapter(abc.ABC):
    """An adapter turns a ``ChatRequest`` into normalized events through one wire format.

    ``stream_chat`` yields event dicts (see ``relay.events``) and ends with exactly
    one ``finish``. Errors are raised as ``RelayError``; SDK exceptions never leak.
    Subclass it, set ``provider_type`` and ``features``, and register the class
    (``relay.providers.register_adapter``, a ``relay.providers`` entry point, or
    ``adapter: module:Class`` in a provider's config).
    """

    provider_type: ClassVar[str]
    features: ClassVar[frozenset[str]] = frozenset({"streaming", "text"})

    def __init__(self, config: ProviderConfig, *, http_client: httpx2.AsyncClient | None = None) -> None:
        """``http_client``: the seed's option to bring your own pooled client (proxies, mTLS); one per replica."""
        self.config = config
        self.http_client = http_client

    @abc.abstractmethod
    def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]: ...

    async def health(self) -> dict[str, Any]:
        """Reachability and latency of the upstream; adapters with one override ``probe``."""
        return {"reachable": True, "ok": True, "latency_ms": 0.0}

    async def aclose(self) -> None:
        return None


class SDKAdapter(BaseProviderAdapter):
    """An adapter over an official SDK client: one client per replica, probed for health by listing models."""

    def __init__(self, config: ProviderConfig, *, http_client: httpx2.AsyncClient | None = None) -> None:
        super().__init__(config, http_client=http_client)
        self.client = self.create_client()

    @abc.abstractmethod
    def create_client(self) -> Any:
        """The seed's ``create_model``: the SDK client, with the SDK's retries off and a pooled HTTP client."""

    async def probe(self, client: Any) -> Any:
        return await client.models.list()

    async def health(self) -> dict[str, Any]:
        client = self.client.with_options(timeout=5.0, max_retries=0)
        return await timed_probe(lambda: self.probe(client), lambda exc: getattr(exc, "status_code", None))

    async def aclose(self) -> None:
        await self.client.close()


KEEPALIVE_EXPIRY_S = 4.0


def pooled_client(config: ProviderConfig) -> httpx2.AsyncClient:
    """One pooled client per replica: connections are reused across every stream it carries."""
    # uvicorn (vLLM, LM Studio's and most Python servers) closes idle keep-alive connections after 5 s, httpx's own
    # default expiry: a stream sent on one at that instant fails with a lost connection. Drop them first.
    limits = httpx2.Limits(
        max_connections=config.max_connections,
        max_keepalive_connections=config.max_connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    timeout = httpx2.Timeout(config.timeout, connect=config.connect_timeout)
    return httpx2.AsyncClient(limits=limits, timeout=timeout, follow_redirects=True)


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) pairs from raw SSE lines; comments and keep-alives are skipped.

    Both wire formats put each event's JSON on one ``data:`` line, so a data line
    completes an event whether or not the transport yields the blank separators.
    """
    event = "message"
    async for line in lines:
        if line.startswith("data:"):
            yield event, line[5:].lstrip(" ")
            event = "message"
        elif line.startswith("event:"):
            event = line[6:].strip()


@contextlib.asynccontextmanager
async def sse_stream(response: Any) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
    """``sse_events`` over an SDK response, both generators closed on exit.

    Left to the garbage collector, a generator abandoned mid-body (a failed
    structured output, a cancelled turn) is closed later by asyncio's finalizer,
    which logs ``aclose(): asynchronous generator is already running``.
    """
    lines = response.iter_lines()
    events = sse_events(lines)
    try:
        yield events
    finally:
        await events.aclose()
        await lines.aclose()


def retry_after_header(headers: Any) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or else ``retry-after``, as both SDKs read them."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return float(value) / scale
            except ValueError:
                return None
    return None


def transport_error(exc: BaseException, prefix: str) -> RelayError | None:
    """A failure of the connection itself, raised by httpx2 while a stream is read."""
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTimeout(prefix + "upstream timed out")
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(prefix + f"connection to upstream lost ({type(exc).__name__})")
    return None


def map_sdk_error(
    exc: Exception, provider_id: str, sdk: ModuleType, status_error: Callable[[Any, str], RelayError]
) -> RelayError:
    """Convert an exception of a Stainless-generated SDK (``openai``, ``anthropic``) at the adapter boundary.

    Both SDKs raise the same classes under the same names, so the ladder is one; only the body of a
    status error (``sdk.APIStatusError``) is the SDK's own, read by ``status_error(exc, prefix)``.
    ``APITimeoutError`` subclasses ``APIConnectionError``: the order of the rungs matters.
    """
    if isinstance(exc, RelayError):
        return exc
    prefix = f"{provider_id}: "
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout(prefix + "upstream timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(prefix + "upstream connection failed or was lost")
    if isinstance(exc, sdk.APIStatusError):
        return status_error(exc, prefix)
    if isinstance(exc, sdk.APIError):
        return ProviderError(prefix + exc.message)
    return transport_error(exc, prefix) or ProviderError(prefix + f"{type(exc).__name__}: {exc}")


async def timed_probe(
    call: Callable[[], Awaitable[Any]], status_of: Callable[[Exception], int | None]
) -> dict[str, Any]:
    """Health as ``health_check_all`` reports it: did the upstream answer, how fast, and how."""
    started = time.perf_counter()
    try:
        await call()
    except Exception as exc:
        status = status_of(exc)
        return {
            "reachable": status is not None,
            "ok": False,
            "status_code": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "error": type(exc).__name__,
        }
    return {"reachable": True, "ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
