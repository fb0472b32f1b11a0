"""Runs the cells of an evaluation: resume, cost ceiling, provider budgets, per-provider concurrency, rate limits,
scoring.

Plain asyncio over two seams: ``complete(request)`` returns a provider's whole
reply, timed where it was folded (``relay.providers.whole``: a Serve pool's
``complete`` on a cluster, a ``ProviderRuntime`` in one process; a cell never
needs its tokens one by one), and a limiter holds the rate buckets (an actor
on a cluster, ``LocalProviderLimiter`` in one process). Retries with backoff and Retry-After happen
once, in the provider runtime; a cell that still fails is recorded with its
error and the run goes on. Each cell is written to the result store as soon
as it finishes, so a stopped run loses only the cells in flight.

A provider with a budget (``budget_usd`` in its config) admits each cell
against its worst case, as the ingress admits a chat run (``relay.spend``):
once the budget is spent the remaining cells are recorded ``refused``, not
called, and a later run of the same evaluation calls them again (resume) when
the budget allows, in the next period or under a raised limit. The ledger is
this evaluation's own, seeded from its result store (so a resumed run counts
what its earlier runs spent); evaluations do not share it with each other or
with chat, whose budgets the ingress keeps. Judge calls are not held to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from relay.errors import as_relay_error
from relay.evaluation.costs import CostCeilingExceeded, CostEstimate, PriceTable, estimate_cost, estimate_input_tokens
from relay.evaluation.dataset import Row
from relay.evaluation.judge import LLMJudge
from relay.evaluation.plan import Candidate, Cell, CellKey, plan_cells
from relay.evaluation.progress import Progress
from relay.evaluation.results import ResultStore
from relay.evaluation.scoring import Score, Scorer
from relay.evaluation.spec import EvalOptions
from relay.evaluation.summary import CandidateSummary, below_threshold, summarize
from relay.providers.whole import Completer, WholeReply
from relay.request import ChatRequest
from relay.spend import Budget, BudgetLedger, RunCost

__all__ = ["Evaluation", "EvalResult", "ProviderLimiter", "scorer_hash"]


class ProviderLimiter(Protocol):
    async def configure(self, provider: str, rpm: float | None, tpm: float | None) -> None: ...
    async def reserve(self, provider: str, tokens: int, correction: int = 0) -> float: ...
    async def settle(self, provider: str, reserved: int, used: int) -> None: ...
    async def pause(self, provider: str, seconds: float) -> None: ...


def scorer_hash(scorers: Sequence[Scorer]) -> str:
    return hashlib.sha256("\n".join(s.spec for s in scorers).encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Call:
    text: str = ""
    finish_reason: str | None = None
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    @classmethod
    def of(cls, reply: WholeReply) -> _Call:
        """A cell's output is its text, or its tool calls as JSON when it answered only with calls."""
        return cls(
            text=reply.text or (orjson.dumps(reply.tool_calls).decode() if reply.tool_calls else ""),
            finish_reason="error" if reply.error else reply.finish_reason,
            ttft_ms=reply.ttft_ms,
            latency_ms=reply.latency_ms,
            input_tokens=reply.usage.get("input_tokens", 0),
            output_tokens=reply.usage.get("output_tokens", 0),
            usage=dict(reply.usage),
            error=reply.error,
        )


@dataclass(slots=True)
class EvalResult:
    records: list[dict[str, Any]]
    summaries: list[CandidateSummary]
    estimate: CostEstimate
    called: int = 0
    reused: int = 0
    rescored: int = 0
    wall_s: float = 0.0
    failing: list[CandidateSummary] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a candidate's pass rate is under ``--fail-under``: what CI reads."""
        return 1 if self.failing else 0


class Evaluation:
    def __init__(
        self,
        rows: Sequence[Row],
        candidates: Sequence[Candidate],
        *,
        store: ResultStore,
        complete: Completer | None = None,
        limiter: ProviderLimiter | None = None,
        scorers: Sequence[Scorer] = (),
        options: EvalOptions | None = None,
        prices: PriceTable | None = None,
        progress: Progress | None = None,
        on_cell: Callable[[dict[str, Any]], None] | None = None,
        budgets: Mapping[str, Budget] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``budgets``: provider id to its budget; ``clock``: wall time, for the budgets' periods."""
        self.rows = rows
        self.candidates = candidates
        self.complete = complete
        self.limiter = limiter
        self.store = store
        self.scorers = list(scorers)
        self.options = options or EvalOptions()
        self.prices = prices or PriceTable()
        self.progress = progress
        self.on_cell = on_cell
        self.scorer_hash = scorer_hash(self.scorers)
        self.cells = plan_cells(rows, candidates, self.options.repeat, self.options.params)
        self.judges = [s for s in self.scorers if isinstance(s, LLMJudge)]
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}
        self._corrections: dict[str, int] = {}
        self.budgets = dict(budgets or {})
        self.ledger = BudgetLedger(clock, seed=self._spent_before)

    def pending(self) -> tuple[list[Cell], list[Cell], dict[CellKey, dict[str, Any]]]:
        """(cells to call, finished cells to re-score because the scorers changed, stored records)."""
        stored = self.store.records(cell.key for cell in self.cells)
        to_call, to_rescore = [], []
        for cell in self.cells:
            record = stored.get(cell.key)
            retry = record is not None and record["status"] == "error" and self.options.retry_errors
            if record is None or record["status"] == "refused" or retry:
                to_call.append(cell)
            elif record["status"] == "ok" and record["scorer_hash"] != self.scorer_hash:
                to_rescore.append(cell)
        return to_call, to_rescore, stored

    def estimate(self, to_call: Sequence[Cell], to_rescore: Sequence[Cell]) -> CostEstimate:
        judges = [(j.judge, j.max_tokens) for j in self.judges]
        estimate = estimate_cost(to_call, self.prices, judges)
        rescoring = estimate_cost(to_rescore, self.prices, judges)
        for label, cost in rescoring.per_label.items():
            if label.startswith("judge "):
                estimate.per_label[label] = estimate.per_label.get(label, 0.0) + cost
                estimate.total += cost
        estimate.unpriced += [name for name in rescoring.unpriced if name not in estimate.unpriced]
        return estimate

    def preflight(self) -> tuple[list[Cell], list[Cell], dict[CellKey, dict[str, Any]], CostEstimate]:
        """What the run would do and its worst-case cost; raises ``CostCeilingExceeded`` above ``max_cost``."""
        to_call, to_rescore, stored = self.pending()
        estimate = self.estimate(to_call, to_rescore)
        ceiling = self.options.max_cost
        if ceiling is not None and not self.options.force and (estimate.unpriced or estimate.total > ceiling):
            raise CostCeilingExceeded(estimate, ceiling)
        return to_call, to_rescore, stored, estimate

    def _seams(self) -> tuple[Completer, ProviderLimiter]:
        if self.complete is None or self.limiter is None:
            raise RuntimeError("an Evaluation runs with complete and limiter; without them it can only preflight")
        return self.complete, self.limiter

    async def run(self) -> EvalResult:
        _, limiter = self._seams()
        started = time.perf_counter()
        to_call, to_rescore, stored, estimate = self.preflight()
        providers = {c.provider for c in self.candidates} | {j.judge.provider for j in self.judges}
        for provider in sorted(providers):
            self._slots[provider] = asyncio.Semaphore(self.options.in_flight(provider))
            # Runs that limit a provider share its buckets (the last one's limits hold); the others leave them be.
            rpm, tpm = self.options.rpm.get(provider), self.options.tpm.get(provider)
            if rpm is not None or tpm is not None:
                await limiter.configure(provider, rpm, tpm)
        if self.progress is not None:
            totals: dict[str, int] = {c.label: 0 for c in self.candidates}
            for cell in to_call:
                totals[cell.candidate.label] += 1
            self.progress.start(totals)
        try:
            async with asyncio.TaskGroup() as group:
                for cell in to_call:
                    group.create_task(self._called(cell))
                for cell in to_rescore:
                    group.create_task(self._rescored(cell, stored[cell.key]))
        finally:
            if self.progress is not None:
                self.progress.close()
            for provider, correction in self._corrections.items():
                await limiter.settle(provider, 0, correction)
            self._corrections.clear()
        final = self.store.records(cell.key for cell in self.cells)
        records = [final[cell.key] for cell in self.cells if cell.key in final]
        summaries = summarize(records, [c.label for c in self.candidates])
        failing = below_threshold(summaries, self.options.fail_under) if self.options.fail_under is not None else []
        return EvalResult(
            records,
            summaries,
            estimate,
            called=len(to_call),
            reused=len(self.cells) - len(to_call) - len(to_rescore),
            rescored=len(to_rescore),
            wall_s=time.perf_counter() - started,
            failing=failing,
        )

    def _spent_before(self, kind: str, subject: str, since: float) -> float:
        """What this evaluation's stored cells of a provider cost in the period: a resumed run starts from it."""
        stored = self.store.records(cell.key for cell in self.cells).values()
        return sum(r["cost"] or 0.0 for r in stored if r["provider"] == subject and (r["updated_at"] or 0) >= since)

    async def _called(self, cell: Cell) -> None:
        candidate = cell.candidate
        budget = self.budgets.get(candidate.provider)
        async with self._slots[candidate.provider]:
            reservation = ""
            if budget is not None:  # in the slot: only cells in flight hold a reservation
                worst = self.prices.cost(
                    candidate.provider, candidate.model, estimate_input_tokens(cell.request.messages), cell.max_tokens
                )
                decision = self.ledger.reserve([budget], worst)
                if decision.reservation is None:
                    self._finished(cell, self._refused(cell, decision.message or "budget spent"), error=True)
                    return
                reservation = decision.reservation
            call = await self.call(cell.request, cell.max_tokens)
        record = await self._record(cell, call)
        if budget is not None:
            self.ledger.settle(reservation, record["cost"], [budget])
        self._finished(cell, record, error=call.error is not None)

    def _finished(self, cell: Cell, record: dict[str, Any], *, error: bool) -> None:
        if self.progress is not None:
            self.progress.update(cell.candidate.label, error=error)
        if self.on_cell is not None:
            self.on_cell(record)

    def _refused(self, cell: Cell, message: str) -> dict[str, Any]:
        """A cell its provider's budget did not admit: stored, never called, called again by a later run."""
        candidate = cell.candidate
        error = {"error_type": "budget_exceeded", "message": message, "status_code": 429}
        record = (
            self._cell_fields(cell)
            | {
                "status": "refused",
                "output": "",
                "finish_reason": None,
                "ttft_ms": None,
                "latency_ms": 0.0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost": 0.0 if self.prices.lookup(candidate.provider, candidate.model) else None,
                "error": error,
            }
            | self._scored([], error)
        )
        self.store.put(record)
        return record

    async def _rescored(self, cell: Cell, stored: dict[str, Any]) -> None:
        scores = await self.score(stored["output"], cell.row)
        self.store.put(stored | self._scored(scores, None))

    async def call(self, request: ChatRequest, max_tokens: int) -> _Call:
        """One provider call through the limiter; never raises for a provider's failure."""
        complete, limiter = self._seams()
        provider = request.provider
        # A provider this run gives no limits costs no limiter round trips; a Retry-After still pauses it.
        limited = provider in self.options.rpm or provider in self.options.tpm
        reserved = estimate_input_tokens(request.messages) + max_tokens
        if limited:
            delay = await limiter.reserve(provider, reserved, self._corrections.pop(provider, 0))
        else:
            delay = self._paused_until.get(provider, 0.0) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        try:
            call = _Call.of(await complete(request))
        except Exception as exc:
            # A failure has no reply to time: its latency is the caller's, until the error came back.
            error = {key: value for key, value in as_relay_error(exc).to_event().items() if key != "type"}
            call = _Call(finish_reason="error", latency_ms=(time.perf_counter() - started) * 1000, error=error)
        used = call.input_tokens + call.output_tokens
        if limited and used:
            # Settled with this provider's next reservation, or at the end of the run.
            self._corrections[provider] = self._corrections.get(provider, 0) + used - reserved
        retry_after = (call.error or {}).get("retry_after")
        if call.error and call.error.get("error_type") == "rate_limit_error" and retry_after:
            until = time.monotonic() + float(retry_after)
            self._paused_until[provider] = max(until, self._paused_until.get(provider, until))
            await limiter.pause(provider, float(retry_after))
        return call

    async def score(self, output: str, row: Row) -> list[Score]:
        scores = []
        for scorer in self.scorers:
            if isinstance(scorer, LLMJudge):
                scores.append(await self._judge(scorer, output, row))
                continue
            try:
                scores.append(scorer.score(output, row))
            except Exception as exc:  # a scorer's bug fails its score, never the run
                scores.append(Score(scorer.name, 0.0, False, f"scorer failed: {type(exc).__name__}: {exc}"))
        return scores

    async def _judge(self, scorer: LLMJudge, output: str, row: Row) -> Score:
        judge = scorer.judge
        request = ChatRequest(
            provider=judge.provider,
            messages=scorer.messages(output, row),
            model=judge.model,
            params={"max_tokens": scorer.max_tokens, "temperature": 0},
            provider_options=dict(judge.provider_options),
            memory=False,
        )
        async with self._slots[judge.provider]:
            call = await self.call(request, scorer.max_tokens)
        cost = self._cost(judge.provider, judge.model, call) or 0.0
        if call.error:
            return Score(scorer.name, 0.0, False, f"judge call failed: {call.error.get('message')}", cost)
        verdict = scorer.verdict(call.text)
        verdict.cost = cost
        return verdict

    def _scored(self, scores: list[Score], error: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "scores": [s.to_dict() for s in scores],
            "scorer_hash": self.scorer_hash,
            "passed": error is None and all(s.passed for s in scores),
            "judge_cost": sum(s.cost for s in scores),
        }

    def _cost(self, provider: str, model: str, call: _Call) -> float | None:
        """Each kind of token at its own price (cached input, reasoning), as a chat run is costed."""
        return RunCost().add_usage(self.prices, provider, model, call.usage).usd

    @staticmethod
    def _cell_fields(cell: Cell) -> dict[str, Any]:
        candidate = cell.candidate
        return {
            "row_id": cell.row.id,
            "provider": candidate.provider,
            "model": candidate.model,
            "repeat": cell.repeat,
            "config_hash": cell.config_hash,
            "label": candidate.label,
            "prompt": cell.row.prompt,
            "expected": cell.row.expected,
        }

    async def _record(self, cell: Cell, call: _Call) -> dict[str, Any]:
        scores = [] if call.error else await self.score(call.text, cell.row)
        candidate = cell.candidate
        record = (
            self._cell_fields(cell)
            | {
                "status": "error" if call.error else "ok",
                "output": call.text,
                "finish_reason": call.finish_reason,
                "ttft_ms": call.ttft_ms,
                "latency_ms": call.latency_ms,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
                "cost": self._cost(candidate.provider, candidate.model, call),
                "error": call.error,
            }
            | self._scored(scores, call.error)
        )
        self.store.put(record)
        return record
