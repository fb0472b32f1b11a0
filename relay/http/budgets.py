"""Budgets at the ingress: a run is admitted against its worst case before anything is written, and settled.

``BudgetGuard.admit`` gathers the budgets a request falls under (its API
key's, its user's, its provider's), prices its worst case and asks the shared
ledger (``UserLimitsClient``, ``relay.spend.ledger``). The worst case is one
model call: ``max_tokens`` (else the provider's ``default_max_tokens``) at the
output price (or the reasoning price, if higher), plus the input estimate
(``estimate_input_tokens``) of the messages sent and, when the session already
holds messages, of its history as the session will send it: at most
``context.history_max_tokens``. Extra tool steps are not foreseen: they are
how a run can cost more than it reserved. A refusal is a 429 ``budget_exceeded`` raised before
the backend opens the run, so no session row or message is written.

An admitted run's stream is watched (``Admission.watch``): a ``warning`` event
(``budget_warning`` from ``budgets.warn_at`` of a budget, ``budget_unpriced``
for a model without a price) goes out with its first content, and the run's
cost, which the session puts in its ``finish`` event, replaces the
reservation when the stream closes. ``X-Relay-Budget-Remaining`` (USD left in
the tightest budget once this run's worst case is held) is set on the
response by ``BudgetHeaders``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.config import BudgetSettings, ProviderConfig, RelaySettings
from relay.errors import PermissionDenied
from relay.http.auth import CALLER
from relay.http.limits import UserLimitsClient
from relay.request import ChatRequest
from relay.spend import Budget, PriceTable, RunCost
from relay.spend.prices import estimate_input_tokens
from relay.store import Store
from relay.types import Batches

__all__ = ["Admission", "BudgetGuard", "BudgetHeaders", "REMAINING_HEADER"]

REMAINING_HEADER = "X-Relay-Budget-Remaining"
_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("relay_budget_headers", default=None)


@dataclass(slots=True)
class Admission:
    """An admitted run's reservation, the budgets it was held against, and what to tell the caller."""

    guard: BudgetGuard
    request: ChatRequest
    budgets: list[Budget]
    reservation: str = ""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float | None = None
    served: str | None = None
    _usage: dict[str, int] = field(default_factory=dict)
    _finished: bool = False

    async def watch(self, batches: Batches) -> Batches:
        """Pass the batches through: warnings join the first batch with content, the run's cost is noted."""
        pending = list(self.warnings)
        async for batch in batches:
            for event in batch:
                if event["type"] == "usage":
                    for key, value in event.items():
                        if key.endswith("_tokens"):
                            self._usage[key] = self._usage.get(key, 0) + int(value or 0)
                elif event["type"] == "finish" and isinstance(event.get("metrics"), dict):
                    metrics = event["metrics"]
                    self._finished, self.cost_usd, self.served = True, metrics.get("cost_usd"), metrics.get("provider")
            if pending and any(event["type"] != "status" for event in batch):
                # after the content, so that an early error still decides the response's status
                batch, pending = [*batch, *pending], []
            yield batch

    def settle(self) -> None:
        """The run ended (or its caller left): its cost replaces the reservation. Without the session's ``finish``
        (a closed stream) the usage seen so far is priced at the requested model."""
        if not self.budgets:
            return
        if self._finished:
            usd, served = self.cost_usd, self.served or self.request.provider
        else:
            cost = RunCost()
            if self._usage:
                cost.add_usage(self.guard.prices, self.request.provider, self.request.model, self._usage)
            usd, served = cost.usd, self.request.provider
        budgets = [b for b in self.budgets if b.kind != "provider"] + self.guard.provider_budgets(served)
        self.guard.limits.settle_budget(self.reservation, usd, budgets)


class BudgetGuard:
    """The gateway's side of budgets: which apply to a request, its worst case, and the ledger's answer."""

    def __init__(self, settings: RelaySettings, prices: PriceTable, limits: UserLimitsClient, store: Store) -> None:
        self.settings: BudgetSettings = settings.budgets
        self.context = settings.context
        self.store = store
        self.limit_settings = settings.limits
        self.prices = prices
        self.limits = limits
        self.providers: dict[str, ProviderConfig] = {p.provider_id: p for p in settings.providers}

    def provider_budgets(self, provider_id: str) -> list[Budget]:
        config = self.providers.get(provider_id)
        if config is None or config.budget_usd is None:
            return []
        return [Budget("provider", provider_id, config.budget_usd, config.budget_period)]

    def budgets_for(self, user_id: str, request: ChatRequest) -> list[Budget]:
        budgets = []
        caller = CALLER.get()
        if caller is not None and caller.budget_usd is not None:
            budgets.append(Budget("key", caller.key_id, caller.budget_usd, caller.budget_period))
        limits = self.limit_settings.for_user(user_id)
        if limits.budget_usd is not None:
            budgets.append(Budget("user", user_id, limits.budget_usd, limits.budget_period))
        return budgets + self.provider_budgets(request.provider)

    def worst_case(self, request: ChatRequest, history_tokens: int = 0) -> float | None:
        """USD the request costs at most in one model call; None when its model has no price."""
        price = self.prices.lookup(request.provider, request.model)
        if price is None:
            return None
        config = self.providers.get(request.provider)
        max_tokens = int(request.params.get("max_tokens") or (config.default_max_tokens if config else 4096))
        output_rate = max(price.output, price.reasoning or 0.0)
        input_tokens = estimate_input_tokens(request.messages) + history_tokens
        return (input_tokens * price.input + max_tokens * output_rate) / 1_000_000

    async def history_tokens(self, session_id: str | None) -> int:
        """The most a session's stored history adds to a call's input: its estimate, capped by the context budget."""
        if session_id is None or not await self.store.offload(self.store.count_messages, session_id):
            return 0
        cap = self.context.history_max_tokens
        return (
            cap if cap is not None else estimate_input_tokens(await self.store.offload(self.store.messages, session_id))
        )

    async def admit(
        self, user_id: str, request: ChatRequest, providers: Sequence[ProviderConfig], session_id: str | None
    ) -> Admission:
        """Admit the request against every budget it falls under, or raise ``BudgetExceeded`` (429)."""
        self.providers = {p.provider_id: p for p in providers}
        admission = Admission(self, request, self.budgets_for(user_id, request))
        if not admission.budgets:
            return admission
        worst = self.worst_case(request, await self.history_tokens(session_id))
        named = ", ".join(budget.describe() for budget in admission.budgets)
        if worst is None:
            model = f"{request.provider}/{request.model or ''}".rstrip("/")
            if self.settings.unpriced == "refuse":
                raise PermissionDenied(
                    f"{model} has no price, and the {named} refuses unpriced models (budgets.unpriced: refuse);"
                    " add it to the price table",
                    code="unpriced_model",
                )
            message = f"{model} has no price: this run is not counted against the {named}"
            admission.warnings.append({"type": "warning", "message": message, "code": "budget_unpriced"})
        decision = await self.limits.reserve_budget(admission.budgets, worst)
        admission.reservation = decision.raise_if_refused()
        if decision.warning:
            admission.warnings.append({"type": "warning", "message": decision.warning, "code": "budget_warning"})
        headers = _HEADERS.get()
        if headers is not None and decision.remaining_usd is not None:
            headers[REMAINING_HEADER] = f"{decision.remaining_usd:.6f}"
        return admission


class BudgetHeaders:
    """Plain ASGI: the headers the gateway decided while opening a run, added to the response it starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        token = _HEADERS.set(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
                message = message | {"headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _HEADERS.reset(token)
