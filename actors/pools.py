"""Serve handles to the provider pools, one per pool per process, and the stream through one.

A handle's router learns the pool's replicas on first use (~0.3 s), so every
caller in a process (session actor, ingress, evaluation driver) keeps its
handles for the life of the process rather than asking Serve per call.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from relay.request import ChatRequest
from relay.types import Batches

from .names import pool_name

__all__ = ["PoolHandles"]


class PoolHandles:
    def __init__(self) -> None:
        self._handles: dict[tuple[str, str], DeploymentHandle] = {}

    def get(self, pool_app: str | None, provider: str) -> DeploymentHandle:
        """The handle to ``provider``'s pool in the Serve app ``pool_app`` (None: the main app, ``relay``)."""
        key = (pool_app or "relay", pool_name(provider))
        if key not in self._handles:
            self._handles[key] = serve.get_deployment_handle(key[1], app_name=key[0])
        return self._handles[key]

    def names(self) -> list[str]:
        """The pools a handle is held to (warmed or used)."""
        return sorted(name for _, name in self._handles)

    async def stream(self, pool_app: str | None, request: ChatRequest) -> Batches:
        """The pool's batches for one request; closing this stream cancels the upstream call too."""
        response = self.get(pool_app, request.provider).stream.options(stream=True).remote(request)
        try:
            async for batch in response:
                yield batch
        finally:
            response.cancel()
