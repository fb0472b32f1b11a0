"""Serve handles to the provider pools, one per pool deployment per process, and the calls through one.

A handle's router learns the pool's replicas on first use (~0.3 s), so every
caller in a process (session actor, ingress, evaluation driver) keeps its
handles for the life of the process rather than asking Serve per call. Every
shared provider goes through the one handle to the shared pool: ``options``
only tags a call with the provider's multiplexed model id, over the same router.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from relay.request import ChatRequest
from relay.types import Batches

from .names import PoolAddress

__all__ = ["PoolHandles"]


class PoolHandles:
    def __init__(self) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle] = {}

    def get(self, pool_app: str | None, provider: str) -> DeploymentHandle:
        """The handle that reaches ``provider``'s pool (``pool_app`` as the directory set it; None: ``relay``)."""
        address = PoolAddress.of(pool_app, provider)
        key = (address.app, address.deployment)
        if key not in self._handles:
            self._handles[key] = serve.get_deployment_handle(address.deployment, app_name=address.app)
        handle = self._handles[key]
        return handle.options(multiplexed_model_id=address.model_id) if address.model_id else handle

    def names(self) -> list[str]:
        """The pool deployments a handle is held to (warmed or used)."""
        return sorted(name for _, name in self._handles)

    async def stats(self, pool_app: str | None, provider: str) -> dict[str, Any]:
        """The provider's routing counters (in flight, TTFT EWMA, breaker) from one replica that serves it."""
        return await self.get(pool_app, provider).stats.remote()  # type: ignore[no-any-return]

    async def health(self, pool_app: str | None, provider: str) -> dict[str, Any]:
        return await self.get(pool_app, provider).health.remote()  # type: ignore[no-any-return]

    async def stream(self, pool_app: str | None, request: ChatRequest) -> Batches:
        """The pool's batches for one request; closing this stream cancels the upstream call too."""
        response = self.get(pool_app, request.provider).stream.options(stream=True).remote(request)
        try:
            async for batch in response:
                yield batch
        finally:
            response.cancel()
