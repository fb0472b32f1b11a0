"""Builds the Relay Serve application; ``serve_app:app`` is the import path.

``app`` is an application builder, so ``config/serve.yaml``'s ``args`` (or
``serve run serve_app:app key=value``) configure it.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from actors.directory import SessionDirectory
from actors.ingress import Ingress
from actors.names import pool_name
from actors.provider_pool import ProviderPool
from relay.config import RelaySettings

__all__ = ["app"]


def app(args: dict[str, Any] | None = None) -> Application:
    settings = RelaySettings.model_validate(args or {})
    pools = {
        p.provider_id: ProviderPool.options(
            name=pool_name(p.provider_id), num_replicas=p.num_replicas, max_ongoing_requests=p.max_ongoing_requests
        ).bind(p, settings.coalesce_base_s, settings.coalesce_per_window)
        for p in settings.providers
    }
    directory = SessionDirectory.bind(settings)
    return Ingress.options(num_replicas=settings.ingress_replicas).bind(settings, directory, pools)
