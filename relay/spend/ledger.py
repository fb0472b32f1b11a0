"""Budgets: USD a key, a user or a provider may spend per day, week, month or in all, held exactly in one place.

``BudgetLedger`` is plain bookkeeping, like ``relay.http.limits.UserLimiter``,
and lives beside it: in-process for ``LocalUserLimits``, inside the cluster's
one limiter actor (``actors.limiter``) for every ingress replica, so a budget
is the cluster's, not a replica's.

A request is admitted against its worst case (``reserve``): it is refused when
what is spent, plus what running requests hold, plus its own worst case would
pass the limit. Its reservation is held while it streams and replaced by its
real cost when it ends (``settle``). Since admission and settlement run one at
a time in one owner, concurrent requests from any number of replicas overshoot
a budget only by what admitted requests cost beyond their worst case (history
the estimate does not see, extra tool steps): never by a race.

Periods are calendar periods in UTC: a day from midnight, a week from Monday,
a month from its first day; ``none`` never resets. The clock is wall time,
passed in, so a test moves it to the next period instead of waiting. The first
time a budget is seen in a period, what the store already holds for it
(``seed(kind, subject, since)``, ``Store.spent``) is its starting spend, so a
restarted ledger does not forget.
"""

from __future__ import annotations

import calendar
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from relay.errors import BudgetExceeded

__all__ = ["Budget", "BudgetDecision", "BudgetLedger", "Period", "PERIODS", "period_bounds"]

Period = Literal["day", "week", "month", "none"]
PERIODS: tuple[str, ...] = ("day", "week", "month", "none")
# A reservation left by a replica that died is dropped after this long (the longest a run may stream, and more).
_RESERVATION_TTL_S = 2 * 3600.0


@dataclass(frozen=True, slots=True)
class Budget:
    """``kind`` is ``key``, ``user`` or ``provider``; ``subject`` its id."""

    kind: str
    subject: str
    limit_usd: float
    period: str = "month"

    @property
    def scope(self) -> tuple[str, str, str]:
        return (self.kind, self.subject, self.period)

    def describe(self) -> str:
        per = "in total" if self.period == "none" else f"per {self.period}"
        return f"{self.kind} {self.subject} budget of ${self.limit_usd:.2f} {per}"


def period_bounds(period: str, now: float) -> tuple[float, float | None]:
    """(start, end) of the calendar period holding ``now``, UTC; ``none`` is all time and never ends."""
    if period == "none":
        return 0.0, None
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    else:
        raise ValueError(f"unknown budget period {period!r}; use one of {', '.join(PERIODS)}")
    return start.timestamp(), end.timestamp()


@dataclass(slots=True)
class BudgetDecision:
    """Admitted (``reservation`` set, ``""`` when nothing is held) or refused (``message``, ``retry_after``)."""

    reservation: str | None
    message: str | None = None
    retry_after: float | None = None
    remaining_usd: float | None = None  # of the tightest budget, after this request's worst case
    warning: str | None = None

    def raise_if_refused(self) -> str:
        if self.reservation is None:
            raise BudgetExceeded(self.message or "A budget is spent", retry_after=self.retry_after)
        return self.reservation


@dataclass(slots=True)
class _Spend:
    start: float
    usd: float


@dataclass(slots=True)
class _Reservation:
    scopes: list[tuple[str, str, str]]
    usd: float
    expires: float


class BudgetLedger:
    """Spend per budget and period, and the reservations of running requests. Not thread-safe: one owner."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        seed: Callable[[str, str, float], float] | None = None,
        warn_at: float = 0.8,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.warn_at = warn_at
        self.spend: dict[tuple[str, str, str], _Spend] = {}
        self.held: dict[tuple[str, str, str], float] = {}
        self.reservations: dict[str, _Reservation] = {}
        self._ids = itertools.count(1)

    def spent(self, budget: Budget) -> float:
        """What ``budget`` has spent in its current period (seeded from the store on first sight)."""
        now = self.clock()
        start, _ = period_bounds(budget.period, now)
        current = self.spend.get(budget.scope)
        if current is None or current.start != start:
            seeded = self.seed(budget.kind, budget.subject, start) if self.seed is not None else 0.0
            current = self.spend[budget.scope] = _Spend(start, seeded)
        return current.usd

    def _expire(self, now: float) -> None:
        for reservation_id, reservation in list(self.reservations.items()):
            if reservation.expires <= now:
                self._release(reservation_id)

    def _release(self, reservation_id: str) -> None:
        reservation = self.reservations.pop(reservation_id, None)
        if reservation is None:
            return
        for scope in reservation.scopes:
            self.held[scope] = max(0.0, self.held.get(scope, 0.0) - reservation.usd)

    def reserve(self, budgets: Sequence[Budget], worst_usd: float | None) -> BudgetDecision:
        """Admit a request whose cost is at most ``worst_usd`` (None: its model has no price, nothing is held)."""
        now = self.clock()
        self._expire(now)
        worst = worst_usd or 0.0
        for budget in budgets:
            used = self.spent(budget) + self.held.get(budget.scope, 0.0)
            if used >= budget.limit_usd or used + worst > budget.limit_usd:
                _, end = period_bounds(budget.period, now)
                retry = max(1.0, end - now) if end is not None else None
                message = f"{budget.describe()} is spent" if used >= budget.limit_usd else (
                    f"{budget.describe()} has ${budget.limit_usd - used:.4f} left, less than this request's"
                    f" worst case of ${worst:.4f} (max_tokens at the output price)"
                )
                return BudgetDecision(None, message, retry)
        reservation_id = f"budget#{next(self._ids)}"
        scopes = [budget.scope for budget in budgets]
        self.reservations[reservation_id] = _Reservation(scopes, worst, now + _RESERVATION_TTL_S)
        for scope in scopes:
            self.held[scope] = self.held.get(scope, 0.0) + worst
        return self._admitted(reservation_id, budgets)

    def _admitted(self, reservation_id: str, budgets: Sequence[Budget]) -> BudgetDecision:
        decision = BudgetDecision(reservation_id)
        for budget in budgets:
            used = self.spent(budget) + self.held.get(budget.scope, 0.0)
            left = max(0.0, budget.limit_usd - used)
            if decision.remaining_usd is None or left < decision.remaining_usd:
                decision.remaining_usd = left
            if used >= self.warn_at * budget.limit_usd and decision.warning is None:
                share = used / budget.limit_usd if budget.limit_usd else 1.0
                decision.warning = f"{budget.describe()} is {share:.0%} used; ${left:.4f} left"
        return decision

    def settle(self, reservation_id: str, usd: float | None, budgets: Sequence[Budget]) -> None:
        """Replace a reservation by the real cost, charged to ``budgets`` (the served provider's may differ from the
        one reserved after a fallback). ``usd`` None: the run's model had no price; nothing is charged."""
        self._release(reservation_id)
        if usd is None:
            return
        for budget in budgets:
            self.spent(budget)
            self.spend[budget.scope].usd += usd
