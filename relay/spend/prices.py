"""Prices per provider and model, and what one model call's usage costs under them.

Prices are USD per million tokens. A name is looked up as ``provider/model``,
then ``model``, then ``provider``; a name may hold ``*`` wildcards
(``openai/gpt-4o*``, ``anthropic/*``), tried after the exact names, the most
specific (longest) pattern first. A model nobody priced has no cost: callers
record it as unpriced (``None``), never as zero, so a missing price cannot pass
for a free model.

Each kind of token has its own price. ``cached_input`` (prompt-cache reads)
defaults to the input price and ``reasoning`` to the output price, which is
what a provider charges when it sets no discount; ``cache_write`` (Anthropic's
cache creation) defaults to the input price.

Usage follows each wire's own accounting (``relay.wire``): OpenAI's
``input_tokens`` include the cached reads and its ``output_tokens`` the
reasoning tokens; Anthropic's usage event is the only one that carries
``cache_write_tokens``, and its ``input_tokens`` exclude both cache reads and
writes. ``Price.usage_cost`` tells the two apart by that key.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Price", "PriceTable", "DEFAULT_PRICES", "TOKEN_KINDS", "estimate_input_tokens"]

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "config" / "prices.yaml"
# The kinds of token a cost is broken down by, in the order spend reports them.
TOKEN_KINDS = ("input", "cached_input", "cache_write", "output", "reasoning")
_OPTIONAL = ("cached_input", "reasoning", "cache_write")
# Tokens counted for each message's framing, and for each non-text part (an image, a file).
_MESSAGE_OVERHEAD = 4
_PART_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None
    cache_write: float | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000

    def usage_tokens(self, usage: Mapping[str, Any]) -> dict[str, int]:
        """One call's usage event split into disjoint kinds, each billed once (see the module docstring)."""
        inputs = int(usage.get("input_tokens") or 0)
        cached = int(usage.get("cache_read_tokens") or 0)
        written = int(usage.get("cache_write_tokens") or 0)
        outputs = int(usage.get("output_tokens") or 0)
        reasoning = min(int(usage.get("reasoning_tokens") or 0), outputs)
        if "cache_write_tokens" not in usage:  # OpenAI's accounting: cached reads are part of the input
            cached = min(cached, inputs)
            inputs -= cached
        return {
            "input": inputs,
            "cached_input": cached,
            "cache_write": written,
            "output": outputs - reasoning,
            "reasoning": reasoning,
        }

    def usage_cost(self, tokens: Mapping[str, int]) -> float:
        """USD for ``usage_tokens``' breakdown."""
        rates = {
            "input": self.input,
            "cached_input": self.input if self.cached_input is None else self.cached_input,
            "cache_write": self.input if self.cache_write is None else self.cache_write,
            "output": self.output,
            "reasoning": self.output if self.reasoning is None else self.reasoning,
        }
        return sum(tokens.get(kind, 0) * rate for kind, rate in rates.items()) / 1_000_000


class PriceTable:
    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices = dict(prices or {})
        # Wildcard names, most specific first: the longest pattern is the narrowest.
        self.patterns = sorted((name for name in self.prices if "*" in name), key=len, reverse=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "prices") -> PriceTable:
        table = data.get("prices", data) if isinstance(data, Mapping) else None
        if not isinstance(table, Mapping):
            raise ValueError(f"{source}: expected a mapping 'prices: {{NAME: {{input: USD, output: USD}}}}'")
        prices = {}
        for name, entry in table.items():
            if not isinstance(entry, Mapping) or not {"input", "output"} <= set(entry):
                raise ValueError(f"{source}: price '{name}' needs 'input' and 'output' (USD per million tokens)")
            unknown = set(entry) - {"input", "output", *_OPTIONAL}
            if unknown:
                raise ValueError(f"{source}: price '{name}': unknown field(s) {', '.join(sorted(unknown))}")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in entry.values()):
                raise ValueError(f"{source}: price '{name}': every price must be a non-negative number")
            optional = {key: float(entry[key]) for key in _OPTIONAL if key in entry}
            prices[str(name)] = Price(float(entry["input"]), float(entry["output"]), **optional)
        return cls(prices)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        path = Path(path) if path is not None else DEFAULT_PRICES
        return cls.from_mapping(yaml.safe_load(path.read_text()) or {}, str(path))

    def lookup(self, provider: str, model: str | None) -> Price | None:
        names = [f"{provider}/{model}", model, provider] if model else [provider]
        for name in names:
            if name in self.prices:
                return self.prices[name]
        for pattern in self.patterns:
            if any(fnmatch.fnmatchcase(name, pattern) for name in names[:-1] or names):
                return self.prices[pattern]
        return None

    def cost(self, provider: str, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        price = self.lookup(provider, model)
        return None if price is None else price.cost(input_tokens, output_tokens)


def estimate_input_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """A generous guess before a call: a token per 4 characters, rounded up, plus framing per message."""
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
