"""The cells of an evaluation: every row by candidate by repeat, each with its durable key.

A cell's key is ``(row id, provider, model, repeat, config hash)``. The config
hash covers what the provider is sent (messages, parameters, provider
options), so editing a row or a template makes new cells, while a rerun of
the same command finds its finished cells under the same keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from relay.evaluation.dataset import Row
from relay.request import ChatRequest

__all__ = ["Candidate", "Cell", "CellKey", "config_hash", "plan_cells", "parse_candidate"]

CellKey = tuple[str, str, str, int, str]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A provider (and model) under evaluation; ``label`` is how reports name it."""

    provider: str
    model: str
    label: str
    # The worst case for a reply's length when a row sets no max_tokens.
    default_max_tokens: int = 4096
    provider_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def parse_candidate(spec: str) -> tuple[str, str | None]:
    """``provider`` or ``provider/model``, as the OpenAI-compatible routes name them."""
    provider, _, model = spec.strip().partition("/")
    if not provider:
        raise ValueError(f"bad provider {spec!r}: expected PROVIDER or PROVIDER/MODEL")
    return provider, model or None


def config_hash(messages: list[dict[str, Any]], params: dict[str, Any], provider_options: dict[str, Any]) -> str:
    payload = {"messages": messages, "params": params, "provider_options": provider_options}
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(slots=True)
class Cell:
    row: Row
    candidate: Candidate
    repeat: int
    request: ChatRequest
    config_hash: str

    @property
    def key(self) -> CellKey:
        return (self.row.id, self.candidate.provider, self.candidate.model, self.repeat, self.config_hash)

    @property
    def max_tokens(self) -> int:
        return int(self.request.params.get("max_tokens") or self.candidate.default_max_tokens)


def plan_cells(
    rows: Sequence[Row], candidates: Sequence[Candidate], repeat: int = 1, params: dict[str, Any] | None = None
) -> list[Cell]:
    """Row-major order, so an interrupted run has finished whole rows across candidates."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    cells = []
    for row in rows:
        merged = (params or {}) | row.params
        for candidate in candidates:
            digest = config_hash(row.messages, merged, candidate.provider_options)
            for index in range(repeat):
                request = ChatRequest(
                    provider=candidate.provider,
                    messages=row.messages,
                    model=candidate.model,
                    params=dict(merged),
                    provider_options=dict(candidate.provider_options),
                    memory=False,
                )
                cells.append(Cell(row, candidate, index, request, digest))
    return cells
