"""Prices, the worst-case estimate a run must fit under, and the cost of each finished cell.

Prices are the table every run is costed with (``relay.spend.prices``, re-exported
here). The estimate before a run is an upper bound on
output (every reply runs to its ``max_tokens``) and a generous guess on input
(a token per 4 characters, rounded up, plus framing); a candidate with no
price makes the estimate unknown, which a cost ceiling refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.spend.prices import DEFAULT_PRICES, Price, PriceTable, estimate_input_tokens

__all__ = [
    "Price",
    "PriceTable",
    "CostEstimate",
    "CostCeilingExceeded",
    "estimate_input_tokens",
    "estimate_cost",
    "DEFAULT_PRICES",
]


@dataclass(slots=True)
class CostEstimate:
    """The worst case of the cells still to run, per candidate label; ``unpriced`` lists what has no price."""

    total: float = 0.0
    per_label: dict[str, float] = field(default_factory=dict)
    unpriced: list[str] = field(default_factory=list)
    cells: int = 0

    def add(self, label: str, cost: float | None, name: str) -> None:
        self.cells += 1
        if cost is None:
            if name not in self.unpriced:
                self.unpriced.append(name)
            return
        self.total += cost
        self.per_label[label] = self.per_label.get(label, 0.0) + cost

    def describe(self) -> str:
        parts = [f"{label} ${cost:.4f}" for label, cost in self.per_label.items()]
        text = f"worst case ${self.total:.4f} for {self.cells} cells ({', '.join(parts) or 'nothing priced'})"
        if self.unpriced:
            text += f"; no price for {', '.join(self.unpriced)}"
        return text


class CostCeilingExceeded(RuntimeError):
    def __init__(self, estimate: CostEstimate, ceiling: float) -> None:
        reason = (
            f"no price is known for {', '.join(estimate.unpriced)}"
            if estimate.unpriced
            else f"the worst case ${estimate.total:.4f} exceeds --max-cost ${ceiling:.4f}"
        )
        super().__init__(f"refusing to start: {reason} ({estimate.describe()}); pass --force to run anyway")
        self.estimate = estimate
        self.ceiling = ceiling


def estimate_cost(cells: Iterable[Any], prices: PriceTable, judges: Sequence[tuple[Any, int]] = ()) -> CostEstimate:
    """Worst case for ``cells`` (``plan.Cell``), plus one call per cell to each ``(judge candidate, max_tokens)``."""
    estimate = CostEstimate()
    for cell in cells:
        candidate = cell.candidate
        input_tokens = estimate_input_tokens(cell.request.messages)
        estimate.add(
            candidate.label,
            prices.cost(candidate.provider, candidate.model, input_tokens, cell.max_tokens),
            f"{candidate.provider}/{candidate.model}",
        )
        for judge, judge_tokens in judges:
            # The judge reads the prompt, the whole reply and a rubric of a few hundred tokens.
            judged = input_tokens + cell.max_tokens + 300
            estimate.add(
                f"judge {judge.label}",
                prices.cost(judge.provider, judge.model, judged, judge_tokens),
                f"{judge.provider}/{judge.model}",
            )
            estimate.cells -= 1  # a judge call rides on its cell
    return estimate
