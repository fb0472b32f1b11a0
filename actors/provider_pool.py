"""``ProviderPool``: a dedicated pool, one Serve deployment for one provider (isolation, node pinning).

Providers without one share ``actors.shared_pool.SharedPool``; each replica here keeps one SDK client and one breaker.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from relay.config import ProviderConfig
from relay.logs import configure_logging, set_request_id
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.request import ChatRequest
from relay.types import Batches

from .metrics import pool_metrics

__all__ = ["ProviderPool"]


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
class ProviderPool:
    def __init__(self, config: ProviderConfig, coalesce_base_s: float, coalesce_per_window: float):
        configure_logging([config.resolve_key()])
        self.runtime = ProviderRuntime(config, LoadGauge(coalesce_base_s, coalesce_per_window), metrics=pool_metrics())

    async def stream(self, request: ChatRequest) -> Batches:
        set_request_id(request.request_id)  # this call's own context: its log lines carry the ingress's id
        async for batch in self.runtime.stream(request):
            yield batch

    async def health(self) -> dict[str, Any]:
        return await self.runtime.health()

    def stats(self) -> dict[str, Any]:
        return self.runtime.stats()

