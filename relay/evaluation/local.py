"""Evaluation replies in this process: a ``ProviderRuntime`` per provider, no Ray.

The same runtime, and the same fold (``relay.providers.whole.complete``), a
pool replica runs, so retries, the breaker, the adapters and the cells' timing
behave as on a cluster; for notebooks, CI without Ray, and tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from relay.config import ProviderConfig
from relay.errors import NotFound
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.providers.whole import WholeReply, complete
from relay.request import ChatRequest

__all__ = ["RuntimeReplies"]


class RuntimeReplies:
    def __init__(self, configs: Iterable[ProviderConfig]) -> None:
        gauge = LoadGauge()
        self.runtimes = {config.provider_id: ProviderRuntime(config, gauge) for config in configs}

    async def __call__(self, request: ChatRequest) -> WholeReply:
        runtime = self.runtimes.get(request.provider)
        if runtime is None:
            raise NotFound(f"Unknown provider '{request.provider}'", param="provider")
        return await complete(runtime, request)

    async def aclose(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.aclose()
