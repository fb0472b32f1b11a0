"""Prices, the worst-case estimate a run must fit under, and the cost of each finished cell.

Prices are USD per million tokens, looked up as ``provider/model``, then
``model``, then ``provider``. The estimate before a run is an upper bound on
output (every reply runs to its ``max_tokens``) and a generous guess on input
(a token per 4 characters, rounded up, plus framing); a candidate with no
price makes the estimate unknown, which a cost ceiling refuses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Price",
    "PriceTable",
    "CostEstimate",
    "CostCeilingExceeded",
    "estimate_input_tokens",
    "estimate_cost",
    "DEFAULT_PRICES",
]

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "config" / "prices.yaml"
# Tokens counted for each message's framing, and for each non-text part (an image, a file).
_MESSAGE_OVERHEAD = 4
_PART_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


class PriceTable:
    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices = dict(prices or {})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "prices") -> PriceTable:
        table = data.get("prices", data) if isinstance(data, Mapping) else None
        if not isinstance(table, Mapping):
            raise ValueError(f"{source}: expected a mapping 'prices: {{NAME: {{input: USD, output: USD}}}}'")
        prices = {}
        for name, entry in table.items():
            if not isinstance(entry, Mapping) or not {"input", "output"} <= set(entry):
                raise ValueError(f"{source}: price '{name}' needs 'input' and 'output' (USD per million tokens)")
            values = (entry["input"], entry["output"])
            if not all(isinstance(v, int | float) and v >= 0 for v in values):
                raise ValueError(f"{source}: price '{name}': input and output must be non-negative numbers")
            prices[str(name)] = Price(float(entry["input"]), float(entry["output"]))
        return cls(prices)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        path = Path(path) if path is not None else DEFAULT_PRICES
        return cls.from_mapping(yaml.safe_load(path.read_text()) or {}, str(path))

    def lookup(self, provider: str, model: str) -> Price | None:
        for name in (f"{provider}/{model}", model, provider):
            if name in self.prices:
                return self.prices[name]
        return None

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.lookup(provider, model)
        return None if price is None else price.cost(input_tokens, output_tokens)


def estimate_input_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        total += _MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            total += math.ceil(len(content) / 4)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, Mapping) else None
                total += math.ceil(len(text) / 4) if isinstance(text, str) else _PART_TOKENS
        for call in message.get("tool_calls") or ():
            total += math.ceil(len(str(call)) / 4)
    return total


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


def estimate_cost(
    cells: Iterable[Any], prices: PriceTable, judges: Sequence[tuple[Any, int]] = ()
) -> CostEstimate:
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
