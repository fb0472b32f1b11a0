"""Per-user limits: requests and tokens per minute, concurrent streams, and the caps on one request.

``UserLimiter`` is plain bookkeeping, so the same class runs in-process
(``LocalUserLimits``) and inside the one cluster-wide actor (``actors.limiter``)
that every ingress replica asks: a limit is the cluster's, not a process's.

Rates are token buckets: a bucket holds up to a minute's allowance and refills
continuously, so a burst of a minute's worth is allowed and then the rate
holds. Tokens are charged when a turn ends (only then are they known), so the
token bucket may go negative; a user is refused while it is below one.
A turn holds a lease while it streams; a lease left by a replica that died
expires after ``lease_ttl_s``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.buckets import TokenBucket
from relay.config import LimitSettings
from relay.errors import PayloadTooLarge, ProviderTimeout, RateLimited
from relay.spend import Budget, BudgetDecision, BudgetLedger
from relay.types import Batches

__all__ = [
    "Decision",
    "UserLimiter",
    "UserLimitsClient",
    "LocalUserLimits",
    "check_size",
    "metered",
]


_MAX_IDLE_USERS = 10_000


@dataclass(slots=True)
class Decision:
    """``lease`` when allowed; else why not, and when to come back."""

    lease: str | None
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None

    def raise_if_refused(self) -> str:
        if self.lease is None:
            raise RateLimited(self.message or "Rate limited", code=self.code, retry_after=self.retry_after)
        return self.lease


@dataclass(slots=True)
class _User:
    requests: TokenBucket
    tokens: TokenBucket
    streams: set[str] = field(default_factory=set)


def _refill(bucket: TokenBucket, per_minute: int, now: float) -> None:
    bucket.per_minute = per_minute  # ``configure`` may have changed the limit since the bucket was made
    bucket.refill(now)


class UserLimiter:
    """Per-user buckets and stream leases. Not thread-safe: one event loop or one actor owns it."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.users: dict[str, _User] = {}
        self.leases: dict[str, tuple[str, float]] = {}  # lease -> (user, expiry)
        self._ids = itertools.count(1)
        self.refused: dict[str, int] = {}

    def configure(self, settings: LimitSettings) -> None:
        self.settings = settings

    def _user(self, user_id: str, now: float) -> _User:
        user = self.users.get(user_id)
        if user is None:
            limits = self.settings.for_user(user_id)
            rpm, tpm = float(limits.requests_per_min or 0), float(limits.tokens_per_min or 0)
            # full: a minute's allowance (the default ``burst_s``); empty when there is no limit
            user = self.users[user_id] = _User(TokenBucket(rpm, rpm, now), TokenBucket(tpm, tpm, now))
        return user

    def _expire(self, now: float) -> None:
        for lease, (user_id, expiry) in list(self.leases.items()):
            if expiry <= now:
                self._drop(lease, user_id)
        if len(self.users) > _MAX_IDLE_USERS:  # a user idle for a minute has full buckets: forgetting it is exact
            for user_id, user in list(self.users.items()):
                idle = now - max(user.requests.stamp, user.tokens.stamp)
                if not user.streams and idle > 60.0 and user.tokens.level >= 0:
                    del self.users[user_id]

    def _drop(self, lease: str, user_id: str) -> None:
        self.leases.pop(lease, None)
        user = self.users.get(user_id)
        if user is not None:
            user.streams.discard(lease)

    def acquire(self, user_id: str) -> Decision:
        """One turn starts: a request token, a stream slot, and a token bucket that is not in debt."""
        now = self.clock()
        self._expire(now)
        limits = self.settings.for_user(user_id)
        user = self._user(user_id, now)
        if limits.concurrent_streams is not None and len(user.streams) >= limits.concurrent_streams:
            return self._refuse(
                "concurrent_streams",
                1.0,
                f"User '{user_id}' already has {len(user.streams)} streams open "
                f"(limit {limits.concurrent_streams}); retry when one ends",
            )
        if limits.requests_per_min is not None:
            _refill(user.requests, limits.requests_per_min, now)
            if user.requests.level < 1.0:
                return self._refuse(
                    "requests_per_min",
                    user.requests.wait_until(1.0),
                    f"User '{user_id}' is over {limits.requests_per_min} requests per minute",
                )
        if limits.tokens_per_min is not None:
            _refill(user.tokens, limits.tokens_per_min, now)
            if user.tokens.level < 1.0:
                return self._refuse(
                    "tokens_per_min",
                    user.tokens.wait_until(1.0),
                    f"User '{user_id}' is over {limits.tokens_per_min} tokens per minute",
                )
        if limits.requests_per_min is not None:
            user.requests.level -= 1.0
        lease = f"{user_id}#{next(self._ids)}"
        user.streams.add(lease)
        self.leases[lease] = (user_id, now + self.settings.lease_ttl_s)
        return Decision(lease)

    def _refuse(self, code: str, retry_after: float, message: str) -> Decision:
        self.refused[code] = self.refused.get(code, 0) + 1
        retry_after = max(1.0, retry_after)
        return Decision(None, retry_after, code, f"{message}; retry after {retry_after:.0f} s")

    def release(self, lease: str, tokens: int = 0) -> None:
        """The turn ended: free its stream slot and charge the tokens it used."""
        entry = self.leases.get(lease)
        user_id = entry[0] if entry else lease.rpartition("#")[0]
        self._drop(lease, user_id)
        limits = self.settings.for_user(user_id)
        if tokens and limits.tokens_per_min is not None:
            user = self._user(user_id, self.clock())
            _refill(user.tokens, limits.tokens_per_min, self.clock())
            user.tokens.level -= tokens

    def snapshot(self, user_id: str) -> dict[str, Any]:
        now = self.clock()
        limits = self.settings.for_user(user_id)
        user = self._user(user_id, now)
        if limits.requests_per_min is not None:
            _refill(user.requests, limits.requests_per_min, now)
        if limits.tokens_per_min is not None:
            _refill(user.tokens, limits.tokens_per_min, now)
        return {
            "streams": len(user.streams),
            "requests_left": user.requests.level if limits.requests_per_min is not None else None,
            "tokens_left": user.tokens.level if limits.tokens_per_min is not None else None,
        }


class UserLimitsClient(Protocol):
    """What the ingress calls: in-process, or the cluster's limiter actor (which also holds the budgets)."""

    async def acquire(self, user_id: str) -> Decision: ...

    def release(self, lease: str, tokens: int) -> None: ...

    async def reserve_budget(self, budgets: list[Budget], worst_usd: float | None) -> BudgetDecision: ...

    def settle_budget(self, reservation: str, usd: float | None, budgets: list[Budget]) -> None: ...


class LocalUserLimits:
    """The in-process limiter: one ``UserLimiter`` and one ``BudgetLedger`` shared by the event loop's requests.

    Two apps handed the same instance stand in for two ingress replicas sharing the cluster's actor.
    """

    def __init__(
        self,
        settings: LimitSettings,
        clock: Callable[[], float] = time.monotonic,
        ledger: BudgetLedger | None = None,
    ) -> None:
        self.limiter = UserLimiter(settings, clock)
        self.ledger = ledger or BudgetLedger()

    async def acquire(self, user_id: str) -> Decision:
        return self.limiter.acquire(user_id)

    def release(self, lease: str, tokens: int) -> None:
        self.limiter.release(lease, tokens)

    async def reserve_budget(self, budgets: list[Budget], worst_usd: float | None) -> BudgetDecision:
        return self.ledger.reserve(budgets, worst_usd)

    def settle_budget(self, reservation: str, usd: float | None, budgets: list[Budget]) -> None:
        self.ledger.settle(reservation, usd, budgets)


def check_size(settings: LimitSettings, messages: list[dict[str, Any]], stored: int | None) -> None:
    """413 before any upstream call: too many messages in the request, or a session's history full."""
    if len(messages) > settings.max_messages:
        raise PayloadTooLarge(
            f"The request has {len(messages)} messages; the limit is {settings.max_messages}",
            param="messages",
            code="too_many_messages",
        )
    cap = settings.max_session_messages
    if cap is not None and stored is not None and stored + len(messages) > cap:
        raise PayloadTooLarge(
            f"The session holds {stored} messages; the limit is {cap}: continue in a new session",
            param="session_id",
            code="session_history_full",
        )


async def metered(
    batches: Batches, timeout_s: float | None, used: list[int]
) -> Batches:
    """Pass the batches through, adding up ``usage`` tokens into ``used[0]``; past ``timeout_s``, end with an error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s is not None else None
    while True:
        try:
            if deadline is None:
                batch = await anext(batches)
            else:
                async with asyncio.timeout_at(deadline):
                    batch = await anext(batches)
        except StopAsyncIteration:
            return
        except TimeoutError:
            error = ProviderTimeout(
                f"The request ran past its {timeout_s:g} s limit (limits.request_timeout_s)", code="request_timeout"
            )
            yield [error.to_event(), {"type": "finish", "reason": "error"}]
            return
        for event in batch:
            if event["type"] == "usage":
                used[0] += int(event.get("input_tokens") or 0) + int(event.get("output_tokens") or 0)
        yield batch
