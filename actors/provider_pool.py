"""``ProviderPool``: one Serve deployment per provider; each replica keeps one SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from relay.coalesce import LoadGauge, coalesce
from relay.config import ProviderConfig
from relay.errors import RelayError
from relay.providers import BaseProviderAdapter, create_adapter
from relay.request import ChatRequest

__all__ = ["ProviderPool", "pool_name"]


def pool_name(provider_id: str) -> str:
    return f"pool-{provider_id}"


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
class ProviderPool:
    def __init__(self, config: ProviderConfig, coalesce_base_s: float = 0.02, coalesce_per_window: float = 10.0):
        self.config = config
        self.gauge = LoadGauge(coalesce_base_s, coalesce_per_window)
        # A configured provider whose adapter is not built yet still deploys; its requests get a clear 400.
        self.adapter: BaseProviderAdapter | None = None
        self.unavailable: RelayError | None = None
        try:
            self.adapter = create_adapter(config)
        except RelayError as exc:
            self.unavailable = exc

    async def stream(self, request: ChatRequest) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield event batches: one Ray object per window, never one per token under load."""
        if self.adapter is None:
            assert self.unavailable is not None
            raise self.unavailable
        self.adapter.check_features(request)
        async for batch in coalesce(self.adapter.stream_chat(request), self.gauge, request.load_hint):
            yield batch

    async def health(self) -> dict[str, Any]:
        if self.adapter is None:
            return {"provider_id": self.config.provider_id, "ok": False, "error": str(self.unavailable)}
        return await self.adapter.health() | {"active_streams": self.gauge.active}
