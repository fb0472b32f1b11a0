"""What runs cost and what callers may spend: the price table, run costs, budgets and spend reports.

Plain Python: the ledger runs in-process (``LocalUserLimits``) or inside the
cluster's limiter actor (``actors.limiter``); the ingress admits and settles
requests against it (``relay.http.budgets``).
"""

from __future__ import annotations

from relay.spend.ledger import PERIODS, Budget, BudgetDecision, BudgetLedger, period_bounds
from relay.spend.prices import DEFAULT_PRICES, Price, PriceTable
from relay.spend.runcost import CallCost, RunCost

__all__ = [
    "PERIODS",
    "Budget",
    "BudgetDecision",
    "BudgetLedger",
    "CallCost",
    "DEFAULT_PRICES",
    "Price",
    "PriceTable",
    "RunCost",
    "period_bounds",
]
