"""The gateway every HTTP surface shares: a request becomes a ``ChatRequest`` and then an open run, within limits.

The route modules (``openai_api``, ``anthropic_api``, ``streaming_api``, ``websocket``)
differ only in how they decode a body and encode the events; resolving the provider
or route, enabling server-side tools, refusing unsupported features, leasing a
stream slot and charging its tokens happen here once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from relay import tracing
from relay.config import ProviderConfig
from relay.errors import InvalidRequest, NotFound
from relay.http.auth import CALLER, require_admin
from relay.http.budgets import BudgetGuard
from relay.http.detached import DetachedRun
from relay.http.limits import LocalUserLimits, UserLimitsClient, check_size, metered
from relay.http.schemas import SESSION_ID_PATTERN, _ChatBase, to_chat_request
from relay.logs import REQUEST_ID
from relay.providers.features import check_features
from relay.providers.media import MediaPolicy
from relay.reply import Reply
from relay.request import ChatRequest, Target
from relay.session.backend import Backend, RunStream
from relay.session.planner import RunPlanner
from relay.session.runlog import Cursor, RunNotLive
from relay.spend import BudgetLedger, PriceTable
from relay.types import Batch, Batches

__all__ = [
    "Gateway",
    "RunFailed",
    "SESSION_HEADER",
    "SSE_HEADERS",
    "chain",
    "collect",
    "encoded",
    "first_batch",
    "noop",
    "session_id_of",
]

log = logging.getLogger("relay.ingress")

SESSION_HEADER = "X-Session-Id"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SESSION_ID = re.compile(SESSION_ID_PATTERN)


def session_id_of(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _SESSION_ID.match(value):
        raise InvalidRequest(f"Invalid {SESSION_HEADER}: use 1-128 letters, digits or _.:-", param=SESSION_HEADER)
    return value


class RunFailed(Exception):
    """The run failed before its first token; the session (and its failed run) still exists."""

    def __init__(self, event: dict[str, object], session_id: str) -> None:
        super().__init__(event["message"])
        self.event = event
        self.session_id = session_id


async def first_batch(run: RunStream) -> Batch:
    """Wait for the first content before the headers go out, so an early failure gets its real status.

    Status events (retrying, fallback) that come before it are held and sent with it.
    """
    held: Batch = []
    try:
        while True:
            try:
                batch = await anext(run.batches)
            except StopAsyncIteration:
                return held
            held.extend(batch)
            if any(event["type"] != "status" for event in batch):
                break
    except BaseException:
        await run.close()
        raise
    first = next(event for event in held if event["type"] != "status")
    if first["type"] == "error":
        await run.close()
        raise RunFailed(first, run.session_id)
    return held


async def chain(first: Batch, run: RunStream) -> Batches:
    if first:
        yield first
    async for batch in run.batches:
        yield batch


async def encoded(
    batches: Batches, close: Callable[[], Awaitable[None]], encode: Callable[[Batch], bytes]
) -> AsyncIterator[bytes]:
    try:
        async for batch in batches:
            yield encode(batch)
    finally:
        await close()


async def collect(run: RunStream, first: Batch) -> Reply:
    reply = Reply()
    reply.extend(first)
    try:
        async for batch in run.batches:
            reply.extend(batch)
    finally:
        await run.close()
    return reply


async def noop() -> None:
    return None


class Gateway:
    def __init__(self, backend: Backend, limits: UserLimitsClient | None = None) -> None:
        self.backend = backend
        settings = backend.settings
        self.keepalive_s = settings.stream_keepalive_s
        # Budgets seed from the store: a restarted ledger starts from what the period's runs already cost.
        ledger = BudgetLedger(seed=backend.store.spent, warn_at=settings.budgets.warn_at)
        self.limits = limits or LocalUserLimits(settings.limits, ledger=ledger)
        self.budgets = BudgetGuard(settings, PriceTable.load(settings.prices), self.limits, backend.store)
        self.media = MediaPolicy(tuple(Path(d) for d in settings.media_dirs))
        self.admin_key_env = settings.admin_key_env
        self.configured = {p.provider_id for p in settings.providers}
        # Counters other surfaces add to ``GET /api/stats`` (the WebSocket connections), by name.
        self.stats: dict[str, Callable[[], dict[str, Any]]] = {}
        self.draining: set[asyncio.Task[None]] = set()
        self.planner = RunPlanner(settings, backend.store)

    def require_admin(self, request: Request) -> None:
        """Admin routes need an admin key when auth is on; on the loopback default the local user is admin."""
        require_admin(request, self.admin_key_env)

    async def open_run(self, *, session_id: str | None, user_id: str, request: ChatRequest) -> RunStream:
        """A run within the caller's limits: sizes checked, a stream slot leased, its worst case admitted under its
        budgets (all before the session is touched), its tokens and cost charged when it ends."""
        limits = self.backend.settings.limits
        store = self.backend.store
        stored = (
            await store.offload(store.count_messages, session_id)
            if session_id and limits.max_session_messages
            else None
        )
        check_size(limits, request.messages, stored)
        request.request_id = request.request_id or REQUEST_ID.get()
        tracing.carry(request, self.backend.settings.tracing.capture_content)
        caller = CALLER.get()
        request.key_id = request.key_id or (caller.key_id if caller is not None else None)
        lease = (await self.limits.acquire(user_id)).raise_if_refused()
        try:
            admission = await self.budgets.admit(user_id, request, await self.backend.providers(), session_id)
        except BaseException:
            self.limits.release(lease, 0)
            raise
        try:
            run = await self.backend.open_run(session_id=session_id, user_id=user_id, request=request)
        except BaseException:
            self.limits.release(lease, 0)
            admission.settle()
            raise
        # The request id explicitly: a resumable run opens in a context of its own, without the request's.
        context = {"request_id": request.request_id, "session_id": run.session_id, "user_id": user_id}
        log.info("run opened", extra=context | {"provider": request.provider})
        used = [0]

        async def close() -> None:
            nonlocal lease
            try:
                await run.close()
            finally:
                if lease:
                    self.limits.release(lease, used[0])
                    lease = ""
                    admission.settle()

        batches = metered(admission.watch(run.batches), limits.request_timeout_s, used)
        return RunStream(run.session_id, batches, close)

    async def chat_request(
        self,
        body: _ChatBase,
        model: str | None,
        provider_id: str | None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> ChatRequest:
        """A chat body as a ``ChatRequest``, planned (``plan``)."""

        def make(provider: str, resolved: str | None) -> ChatRequest:
            return to_chat_request(body, provider=provider, model=resolved, media=self.media)

        return await self.plan(
            make, model, provider_id, body.fallbacks, body.relay_tools, session_id=session_id, user_id=user_id
        )

    async def plan(
        self,
        make: Callable[[str, str | None], ChatRequest],
        model: str | None,
        provider_id: str | None,
        fallbacks: list[str],
        relay_tools: list[str] | None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> ChatRequest:
        """Resolve the provider (or route) and its fallback chain, enable the run's server-side tools, and refuse
        unsupported features before any upstream call. ``make`` builds the request for the resolved provider."""
        route = self.planner.route(model, provider_id)
        if route is not None:
            plan, providers = await self.planner.route_plan(route, self.resolve)
            first = plan.pools[0]
            chat = make(first.provider, first.model)
            chat.route, chat.pool_app = plan, first.pool_app
            fallbacks = fallbacks or route.fallbacks
            self.planner.apply_cache(chat, route)
        else:
            provider, resolved = await self.resolve(model, provider_id)
            chat = make(provider.provider_id, resolved)
            chat.pool_app = provider.pool_app
            fallbacks, providers = fallbacks or provider.fallbacks, [provider]
        chat.request_id = REQUEST_ID.get()
        for i, name in enumerate(fallbacks):
            try:
                fallback, fallback_model = await self.resolve(name, None)
            except NotFound:
                raise InvalidRequest(f"Unknown fallback provider '{name}'", param=f"fallbacks[{i}]") from None
            chat.fallbacks.append(Target(fallback.provider_id, fallback_model, fallback.pool_app))
        await self.planner.enable_tools(chat, relay_tools, session_id, user_id)
        for provider in providers:
            check_features(provider, chat)
        return chat

    async def resolve(self, model: str | None, provider_id: str | None) -> tuple[ProviderConfig, str]:
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

    def detach(self, batches: Batches, close: Callable[[], Awaitable[None]]) -> DetachedRun:
        """A resumable run, consumed by a task of its own so that a dropped caller cannot cancel it."""
        run = DetachedRun(batches, close)
        self.draining.add(run.task)
        run.task.add_done_callback(self.draining.discard)
        return run

    async def run_events(self, run_id: str, user_id: str, cursor: Cursor) -> Batches:
        """A run's events after ``cursor``: the live tail while it streams, else replayed from the store."""
        store = self.backend.store
        run = await store.offload(store.get_run, run_id)
        if run is None or (await store.offload(store.get_session, run["session_id"]) or {}).get("user_id") != user_id:
            raise NotFound(f"Run '{run_id}' not found", param="run_id")
        if run["status"] == "running":
            try:
                return cursor.skip_seen(await self.backend.tail(run["session_id"], run_id, cursor.event))
            except RunNotLive:
                pass
        replay = await store.offload(store.run_events, run_id, cursor.event)

        async def once() -> Batches:
            if replay:
                yield replay

        return cursor.skip_seen(once())
