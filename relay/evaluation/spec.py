"""What an evaluation is asked to do: scorer specs from the command line, and the run's options."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config import ProviderConfig
from relay.evaluation.judge import LLMJudge
from relay.evaluation.plan import Candidate, parse_candidate
from relay.evaluation.scoring import Contains, Equals, JsonSchema, JsonValid, PythonScorer, Regex, Scorer, load_callable

__all__ = ["EvalOptions", "parse_scorer", "parse_fraction", "candidate_for", "candidates_for", "SCORER_HELP"]

SCORER_HELP = (
    "equals[:TEXT] | contains[:TEXT] | icontains[:TEXT] | regex:PATTERN | json-valid | json-schema:FILE_OR_JSON | "
    "python:MODULE:FUNC | python:FILE.py:FUNC | llm-judge:PROVIDER[/MODEL]:RUBRIC (RUBRIC or @FILE); "
    "TEXT defaults to the row's 'expected' and may use {{var}}"
)


def candidate_for(spec: str, providers: Mapping[str, ProviderConfig]) -> Candidate:
    """``PROVIDER[/MODEL]`` against the configured providers; the model defaults to the provider's."""
    provider_id, model = parse_candidate(spec)
    config = providers.get(provider_id)
    if config is None:
        known = ", ".join(sorted(providers)) or "none"
        raise ValueError(f"unknown provider {provider_id!r} (configured: {known})")
    return Candidate(
        provider=provider_id,
        model=model or config.default_model,
        label=spec.strip(),
        default_max_tokens=config.default_max_tokens,
    )


def candidates_for(specs: Sequence[str], providers: Mapping[str, ProviderConfig]) -> list[Candidate]:
    candidates = [candidate_for(spec, providers) for spec in specs]
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a provider is named twice in {', '.join(specs)}")
    if not candidates:
        raise ValueError("name at least one provider")
    return candidates


def parse_scorer(spec: str, candidate: Callable[[str], Candidate] | None = None) -> Scorer:
    """A scorer from its command-line spec; ``candidate`` resolves a judge's ``PROVIDER[/MODEL]``."""
    kind, sep, argument = spec.partition(":")
    value = argument if sep else None
    if kind == "equals":
        return Equals(value)
    if kind in ("contains", "icontains"):
        return Contains(value, ignore_case=kind == "icontains")
    if kind == "json-valid":
        return JsonValid()
    if kind in ("regex", "json-schema", "python", "llm-judge") and not argument:
        raise ValueError(f"scorer {kind!r} needs an argument: {SCORER_HELP}")
    if kind == "regex":
        return Regex(argument)
    if kind == "json-schema":
        return JsonSchema.parse(argument)
    if kind == "python":
        return PythonScorer(load_callable(argument))
    if kind == "llm-judge":
        target, _, rubric = argument.partition(":")
        if not rubric:
            raise ValueError("llm-judge needs PROVIDER[/MODEL]:RUBRIC (or :@rubric.txt)")
        if rubric.startswith("@"):
            rubric = Path(rubric[1:]).read_text(encoding="utf-8")
        if candidate is None:
            raise ValueError("llm-judge needs the configured providers to resolve its judge")
        return LLMJudge(candidate(target), rubric)
    raise ValueError(f"unknown scorer {kind!r}; use {SCORER_HELP}")


def parse_fraction(text: str) -> float:
    """``0.9`` or ``90%``."""
    value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a pass rate: use a fraction from 0 to 1, or a percentage")
    return value


@dataclass(slots=True)
class EvalOptions:
    """How a run goes; every field has a command-line flag of the same name."""

    repeat: int = 1
    # Cells in flight per provider; ``concurrency_for`` overrides it for named providers.
    concurrency: int = 8
    concurrency_for: dict[str, int] = field(default_factory=dict)
    # Cluster-wide limits per provider, in requests and tokens per minute.
    rpm: dict[str, float] = field(default_factory=dict)
    tpm: dict[str, float] = field(default_factory=dict)
    max_cost: float | None = None
    force: bool = False
    retry_errors: bool = False
    # Every candidate must pass at least this share of its cells, or the run exits 1.
    fail_under: float | None = None
    # Request parameters for every row (a row's own ``params`` win): max_tokens, temperature, ...
    params: dict[str, Any] = field(default_factory=dict)

    def in_flight(self, provider: str) -> int:
        return max(1, self.concurrency_for.get(provider, self.concurrency))
