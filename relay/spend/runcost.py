"""The cost of one run: every model call it made (tool steps, fallbacks, its summary), each at its own price."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.spend.prices import TOKEN_KINDS, Price, PriceTable

__all__ = ["RunCost", "CallCost"]

_NO_PRICE = Price(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class CallCost:
    """One model call, for the per provider and model counters; ``usd`` is None when its model has no price."""

    provider: str
    model: str | None
    tokens: dict[str, int]
    usd: float | None


@dataclass(slots=True)
class RunCost:
    """Tokens by kind and USD, summed over calls. One unpriced call makes the whole run unpriced: a partial sum
    would pass for the full cost."""

    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    priced_usd: float = 0.0
    unpriced: bool = False
    calls: list[CallCost] = field(default_factory=list)

    @property
    def usd(self) -> float | None:
        return None if self.unpriced else self.priced_usd

    def add_usage(self, prices: PriceTable, provider: str, model: str | None, usage: Mapping[str, Any]) -> CallCost:
        price = prices.lookup(provider, model)
        # Without a price the split still counts the tokens, as a free model's would, but the cost stays unknown.
        tokens = (price or _NO_PRICE).usage_tokens(usage)
        call = CallCost(provider, model, tokens, None if price is None else price.usage_cost(tokens))
        self.add(call)
        return call

    def add(self, call: CallCost) -> None:
        for kind, count in call.tokens.items():
            self.tokens[kind] = self.tokens.get(kind, 0) + count
        if call.usd is None:
            self.unpriced = True
        else:
            self.priced_usd += call.usd
        self.calls.append(call)

    def merge(self, other: RunCost) -> None:
        for call in other.calls:
            self.add(call)

    def to_dict(self) -> dict[str, Any]:
        """What the run's row keeps in ``cost``: ``usd`` None and ``unpriced`` true when a model had no price."""
        return {"usd": self.usd, "unpriced": self.unpriced, "tokens": dict(self.tokens)}

