"""The evaluation as one call: resolve the dataset, providers and scorers, run, write the outputs.

``run_evaluation`` takes the two seams (replies, limiter) from its caller:
``actors.evaluation.evaluate`` passes the Ray pools and the cluster's
limiter actor; ``evaluate_local`` passes in-process runtimes.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.config import ProviderConfig
from relay.evaluation.costs import CostEstimate, PriceTable
from relay.evaluation.dataset import Row, load_dataset, parse_rows
from relay.evaluation.export import write_outputs
from relay.evaluation.judge import LLMJudge
from relay.evaluation.limits import LocalProviderLimiter
from relay.evaluation.local import RuntimeReplies
from relay.evaluation.plan import Candidate
from relay.evaluation.progress import Progress
from relay.evaluation.results import open_results
from relay.evaluation.runner import EvalResult, Evaluation, ProviderLimiter
from relay.evaluation.scoring import PythonScorer, Scorer
from relay.evaluation.spec import EvalOptions, candidate_for, candidates_for, parse_scorer
from relay.providers.whole import Completer
from relay.spend import Budget

__all__ = [
    "Prepared",
    "ScorerLike",
    "prepare",
    "preflight",
    "provider_budgets",
    "run_evaluation",
    "evaluate_local",
    "default_out",
]

ScorerLike = Scorer | str | Callable[[str, Row], Any]


@dataclass(slots=True)
class Prepared:
    name: str
    rows: list[Row]
    candidates: list[Candidate]
    scorers: list[Scorer]

    @property
    def providers(self) -> set[str]:
        """Every provider the run calls, judges included."""
        judges = {s.judge.provider for s in self.scorers if isinstance(s, LLMJudge)}
        return {c.provider for c in self.candidates} | judges


def _scorer(item: ScorerLike, configs: dict[str, ProviderConfig]) -> Scorer:
    if isinstance(item, Scorer):
        return item
    if isinstance(item, str):
        return parse_scorer(item, lambda spec: candidate_for(spec, configs))
    if callable(item):
        return PythonScorer(item)
    raise TypeError(f"a scorer is a spec string, a Scorer or a callable, not {type(item).__name__}")


def prepare(
    dataset: str | Path | Sequence[dict[str, Any] | Row],
    providers: str | Sequence[str],
    configs: Sequence[ProviderConfig],
    scorers: Sequence[ScorerLike] = (),
    template: str | None = None,
) -> Prepared:
    """Everything checked before any call: a bad row, provider or scorer fails here."""
    by_id = {config.provider_id: config for config in configs}
    specs = [spec for spec in providers.split(",") if spec.strip()] if isinstance(providers, str) else providers
    if isinstance(dataset, str | Path):
        name, rows = Path(dataset).name, load_dataset(dataset, template)
    else:
        records = list(dataset)
        name = "rows"
        given = [r for r in records if isinstance(r, Row)]
        rows = given if len(given) == len(records) else parse_rows(records, template)  # type: ignore[arg-type]
    return Prepared(name, rows, candidates_for(specs, by_id), [_scorer(s, by_id) for s in scorers])


def preflight(
    prepared: Prepared,
    *,
    out: str | Path,
    options: EvalOptions | None = None,
    prices: PriceTable | None = None,
    results_url: str | None = None,
) -> CostEstimate:
    """The worst case of what a run would call now; raises ``CostCeilingExceeded`` before anything starts."""
    store = open_results(results_url, out)
    try:
        evaluation = Evaluation(
            prepared.rows,
            prepared.candidates,
            store=store,
            scorers=prepared.scorers,
            options=options,
            prices=prices if prices is not None else PriceTable.load(),
        )
        return evaluation.preflight()[3]
    finally:
        store.close()


def provider_budgets(configs: Sequence[ProviderConfig]) -> dict[str, Budget]:
    """The budgets of the providers that have one (``budget_usd`` in their config)."""
    return {
        config.provider_id: Budget("provider", config.provider_id, config.budget_usd, config.budget_period)
        for config in configs
        if config.budget_usd is not None
    }


def default_out(dataset: str | Path) -> Path:
    return Path(".relay") / "eval" / Path(dataset).stem


async def run_evaluation(
    prepared: Prepared,
    *,
    complete: Completer,
    limiter: ProviderLimiter,
    out: str | Path,
    options: EvalOptions | None = None,
    prices: PriceTable | None = None,
    results_url: str | None = None,
    progress: Progress | None = None,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    budgets: dict[str, Budget] | None = None,
) -> EvalResult:
    """Run, then write JSONL, CSV (Parquet), the HTML report and summary.json into ``out``; ``budgets``: per
    provider (``provider_budgets``), cells past one are recorded refused."""
    options = options or EvalOptions()
    store = open_results(results_url, out)
    try:
        evaluation = Evaluation(
            prepared.rows,
            prepared.candidates,
            complete=complete,
            limiter=limiter,
            store=store,
            scorers=prepared.scorers,
            options=options,
            prices=prices if prices is not None else PriceTable.load(),
            progress=progress,
            on_cell=on_cell,
            budgets=budgets,
        )
        result = await evaluation.run()
    finally:
        store.close()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = (
        f"dataset {prepared.name} · {len(prepared.rows)} rows x {len(prepared.candidates)} providers x "
        f"{options.repeat} repeat{'s' if options.repeat != 1 else ''} · scorers: "
        f"{', '.join(s.name for s in prepared.scorers) or 'none'} · this run called {result.called} cells, "
        f"reused {result.reused} · {stamp}"
    )
    write_outputs(out, result.records, result.summaries, title=f"Relay evaluation: {prepared.name}", meta=meta)
    return result


async def evaluate_local(
    dataset: str | Path | Sequence[dict[str, Any] | Row],
    providers: str | Sequence[str],
    configs: Sequence[ProviderConfig],
    *,
    scorers: Sequence[ScorerLike] = (),
    options: EvalOptions | None = None,
    out: str | Path | None = None,
    template: str | None = None,
    prices: PriceTable | None = None,
    results_url: str | None = None,
    progress: Progress | None = None,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> EvalResult:
    """The same evaluation without Ray: each provider's runtime in this process, limits per process."""
    prepared = prepare(dataset, providers, configs, scorers, template)
    replies = RuntimeReplies(c for c in configs if c.provider_id in prepared.providers)
    try:
        return await run_evaluation(
            prepared,
            complete=replies,
            limiter=LocalProviderLimiter(),
            out=out or default_out(prepared.name),
            options=options,
            prices=prices,
            results_url=results_url,
            progress=progress,
            on_cell=on_cell,
            budgets=provider_budgets(configs),
        )
    finally:
        await replies.aclose()
