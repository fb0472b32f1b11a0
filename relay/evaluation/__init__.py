"""Batch evaluation across providers: datasets, cells, scorers, costs, durable results and reports.

Plain Python; ``actors.evaluation`` runs it on a Ray cluster through the
provider pools, and ``relay eval`` is its command line.
"""

from __future__ import annotations

from relay.evaluation.api import Prepared, evaluate_local, preflight, prepare
from relay.evaluation.costs import CostCeilingExceeded, CostEstimate, Price, PriceTable, estimate_cost
from relay.evaluation.dataset import DatasetError, Row, load_dataset, parse_rows
from relay.evaluation.export import write_outputs
from relay.evaluation.judge import LLMJudge, parse_verdict
from relay.evaluation.limits import LocalProviderLimiter, ProviderRateLimits
from relay.evaluation.local import RuntimeReplies
from relay.evaluation.plan import Candidate, Cell, config_hash, plan_cells
from relay.evaluation.progress import Progress
from relay.evaluation.report import render_report
from relay.evaluation.results import ResultStore, open_results
from relay.evaluation.runner import EvalResult, Evaluation
from relay.evaluation.scoring import Contains, Equals, JsonSchema, JsonValid, PythonScorer, Regex, Score, Scorer
from relay.evaluation.spec import EvalOptions, candidates_for, parse_scorer
from relay.evaluation.summary import CandidateSummary, summarize, summary_table

__all__ = [
    "Candidate",
    "CandidateSummary",
    "Cell",
    "Contains",
    "CostCeilingExceeded",
    "CostEstimate",
    "DatasetError",
    "Equals",
    "EvalOptions",
    "EvalResult",
    "Evaluation",
    "JsonSchema",
    "JsonValid",
    "LLMJudge",
    "LocalProviderLimiter",
    "Prepared",
    "Price",
    "PriceTable",
    "Progress",
    "PythonScorer",
    "ProviderRateLimits",
    "Regex",
    "ResultStore",
    "Row",
    "RuntimeReplies",
    "Score",
    "Scorer",
    "candidates_for",
    "config_hash",
    "estimate_cost",
    "evaluate_local",
    "load_dataset",
    "open_results",
    "parse_rows",
    "parse_scorer",
    "parse_verdict",
    "plan_cells",
    "preflight",
    "prepare",
    "render_report",
    "summarize",
    "summary_table",
    "write_outputs",
]
