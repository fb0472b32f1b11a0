"""Priced echo providers for the spend and budget tests: costs in whole dollars, so that sums are exact.

Echo counts a token per word: "hello there" is 2 input and 2 output tokens. At a dollar per input token and
two per output token, a run of it on ``echo`` costs $6, and on ``priced`` ($3 in, $1 out, a wildcard price) $8.
Its worst case, with ``max_tokens`` 5, is 7 estimated input tokens and 5 output: $17 on echo, $26 on priced.
``free`` has no price.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.limits import LocalUserLimits
from relay.session.local_backend import LocalBackend
from relay.spend import BudgetLedger
from relay.store import Store, open_store

__all__ = ["Clock", "HELLO", "PRICES", "Replicas", "priced_settings", "replicas"]

PRICES = """prices:
  echo: {input: 1000000, output: 2000000}
  priced/*: {input: 3000000, output: 1000000}
"""
HELLO = [{"role": "user", "content": "hello there"}]


class Clock:
    """Wall time a test moves by hand (to the next budget period), starting at the real now: the store stamps
    runs with the real time, and seeds a budget with the runs of the clock's period."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def priced_settings(tmp_path: Path, **extra: Any) -> RelaySettings:
    (tmp_path / "prices.yaml").write_text(PRICES)
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo", default_max_tokens=5),
        ProviderConfig(provider_id="priced", provider_type="echo", model="p-1", default_max_tokens=5),
        ProviderConfig(provider_id="free", provider_type="echo", model="free", default_max_tokens=5),
    ]
    data = {
        "store_url": f"sqlite:///{tmp_path}/relay.db",
        "providers": providers,
        "prices": str(tmp_path / "prices.yaml"),
        "auth": {"cache_ttl_s": 0},
    }
    return RelaySettings.model_validate(data | extra)


class Replicas:
    """Ingress replicas in one process: an app each, one store, and ONE limiter (the cluster's actor's stand-in)."""

    def __init__(self, settings: RelaySettings, count: int, clock: Clock) -> None:
        self.settings = settings
        self.store: Store = open_store(settings.store_url)
        self.clock = clock
        ledger = BudgetLedger(clock, seed=self.store.spent, warn_at=settings.budgets.warn_at)
        self.limits = LocalUserLimits(settings.limits, ledger=ledger)
        self.apps: list[Starlette] = [
            build_app(LocalBackend(settings, self.store), self.limits) for _ in range(count)
        ]


def replicas(tmp_path: Path, count: int = 2, **extra: Any) -> Replicas:
    return Replicas(priced_settings(tmp_path, **extra), count, Clock())
