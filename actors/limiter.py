"""The cluster's limiter: one named actor holding every user's buckets and stream leases, and every budget.

Every ingress replica asks it, so a limit holds across replicas and nodes. The
cost is one actor call when a turn starts (awaited) and one when it ends (not
awaited). If the actor does not answer within ``limits.limiter_timeout_s`` the
turn goes ahead and a warning is logged: an outage of the limiter must not
become an outage of chat. With no per-user limit configured the actor is never
created and nothing is called.

Budgets (``relay.spend.ledger``) live here too, beside the buckets: every
replica reserves and settles in this one actor, so admission is exact across
replicas. A request under no budget calls nothing; the first one under a
budget creates the actor if no limit did. The ledger seeds each budget from
the store, so a restarted actor starts from the period's recorded spend.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from relay.config import LimitSettings
from relay.http.limits import Decision, UserLimiter
from relay.spend import Budget, BudgetDecision, BudgetLedger
from relay.store import open_store

from .metrics import ingress_metrics

__all__ = ["UserLimiterActor", "RemoteUserLimits", "limiter_name"]

log = logging.getLogger("relay.limiter")


def limiter_name(app_name: str) -> str:
    return f"relay-limiter-{app_name}"


@ray.remote(num_cpus=0, max_restarts=-1)
class UserLimiterActor:
    """A restart forgets the counters: for a minute the limits start over, which errs towards serving.

    The methods are async so that Ray runs each call as it arrives: a synchronous actor runs one caller's calls
    in order, and under load (a 2-core machine, callers timing out) it was seen to hold every later call back.
    None of them awaits, so each still runs whole, one at a time.
    """

    def __init__(self, settings: LimitSettings, store_url: str | None = None, warn_at: float = 0.8) -> None:
        self.limiter = UserLimiter(settings)
        seed = open_store(store_url).spent if store_url else None
        self.ledger = BudgetLedger(seed=seed, warn_at=warn_at)

    async def configure(self, settings: LimitSettings) -> None:
        self.limiter.configure(settings)

    async def acquire(self, user_id: str) -> tuple[str | None, float | None, str | None, str | None]:
        decision = self.limiter.acquire(user_id)
        return decision.lease, decision.retry_after, decision.code, decision.message

    async def release(self, lease: str, tokens: int) -> None:
        self.limiter.release(lease, tokens)

    async def snapshot(self, user_id: str) -> dict[str, Any]:
        return self.limiter.snapshot(user_id) | {"refused": dict(self.limiter.refused)}

    async def reserve_budget(self, budgets: list[Budget], worst_usd: float | None) -> BudgetDecision:
        return self.ledger.reserve(budgets, worst_usd)

    async def settle_budget(self, reservation: str, usd: float | None, budgets: list[Budget]) -> None:
        self.ledger.settle(reservation, usd, budgets)


class RemoteUserLimits:
    """The ingress's ``UserLimitsClient``: finds or creates the named actor on first use."""

    def __init__(self, settings: LimitSettings, name: str, store_url: str | None = None, warn_at: float = 0.8) -> None:
        """``store_url`` and ``warn_at``: what the actor's budget ledger seeds from and warns at, if this replica
        is the one that creates it."""
        self.settings = settings
        self.name = name
        self.store_url = store_url
        self.warn_at = warn_at
        self._actor: Any = None

    def connect(self) -> None:
        """Find or make the actor now, at the replica's start, not on a user's first turn."""
        if self.settings.enforced:
            self._handle()

    def _handle(self) -> Any:
        if self._actor is None:
            try:
                self._actor = ray.get_actor(self.name)
                self._actor.configure.remote(self.settings)  # a redeploy may have changed the limits
            except ValueError:
                try:
                    self._actor = UserLimiterActor.options(name=self.name, lifetime="detached").remote(
                        self.settings, self.store_url, self.warn_at
                    )
                except ValueError:  # another replica created it first
                    self._actor = ray.get_actor(self.name)
        return self._actor

    async def acquire(self, user_id: str) -> Decision:
        if not self.settings.applies_to(user_id):
            return Decision("")  # no limit applies to this user: no actor, no call
        try:
            pending = asyncio.ensure_future(self._handle().acquire.remote(user_id))
        except Exception as exc:
            log.warning("the limiter could not be reached (%s); letting the turn through", type(exc).__name__)
            return Decision("")
        try:
            # shielded: a timeout must not cancel the call (each cancel costs the actor more than the call), and
            # a lease granted late is handed back at once
            lease, retry_after, code, message = await asyncio.wait_for(
                asyncio.shield(pending), timeout=self.settings.limiter_timeout_s
            )
        except TimeoutError:
            pending.add_done_callback(self._release_late)
            log.warning("the limiter did not answer in %g s; letting the turn through", self.settings.limiter_timeout_s)
            return Decision("")
        except Exception as exc:
            if isinstance(exc, ray.exceptions.RayActorError):
                self._actor = None  # found again, or made again, on the next turn
            log.warning("the limiter did not answer (%s); letting the turn through", type(exc).__name__)
            return Decision("")
        if lease is None:
            ingress_metrics().rate_limited.inc(tags={"reason": code or "unknown"})
        return Decision(lease, retry_after, code, message)

    def release(self, lease: str, tokens: int) -> None:
        if not lease or self._actor is None:
            return
        self._actor.release.remote(lease, tokens)

    async def reserve_budget(self, budgets: list[Budget], worst_usd: float | None) -> BudgetDecision:
        """Fails open, as ``acquire`` does: a limiter outage lets the run through uncounted, with a warning logged."""
        try:
            decision: BudgetDecision = await asyncio.wait_for(
                self._handle().reserve_budget.remote(budgets, worst_usd), timeout=self.settings.limiter_timeout_s
            )
        except Exception as exc:
            if isinstance(exc, ray.exceptions.RayActorError):
                self._actor = None
            log.warning("the budget ledger did not answer (%s); letting the turn through", type(exc).__name__)
            return BudgetDecision("")
        if decision.reservation is None:
            ingress_metrics().rate_limited.inc(tags={"reason": "budget"})
        return decision

    def settle_budget(self, reservation: str, usd: float | None, budgets: list[Budget]) -> None:
        if self._actor is None:
            return
        self._actor.settle_budget.remote(reservation, usd, budgets)

    def _release_late(self, pending: asyncio.Future[Any]) -> None:
        if not pending.cancelled() and pending.exception() is None and pending.result()[0]:
            self.release(pending.result()[0], 0)
