"""Builds the Relay Serve application; ``serve_app:app`` is the import path.

``app`` is an application builder, so ``config/serve.yaml``'s ``args`` (or
``serve run serve_app:app key=value``) configure it. ``serve build`` accepts only
a built application, never a builder, so ``default_app`` is ``app()`` for it:
``serve build serve_app:default_app`` lists the deployments that ``config/serve.yaml``
configures.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from actors.directory import SessionDirectory
from actors.ingress import Ingress
from actors.names import pool_name
from actors.provider_pool import ProviderPool
from relay.config import ProviderConfig, RelaySettings

__all__ = ["app", "default_app"]


def _replicas(provider: ProviderConfig, settings: RelaySettings) -> dict[str, Any]:
    """A pool autoscales when its config (or ``pool_autoscaling``) says how; else it keeps ``num_replicas``."""
    autoscaling = provider.autoscaling_config or settings.pool_autoscaling
    return {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": provider.num_replicas}


def app(args: dict[str, Any] | None = None) -> Application:
    settings = RelaySettings.model_validate(args or {})
    pools = {
        p.provider_id: ProviderPool.options(
            name=pool_name(p.provider_id), max_ongoing_requests=p.max_ongoing_requests, **_replicas(p, settings)
        ).bind(p, settings.coalesce_base_s, settings.coalesce_per_window)
        for p in settings.providers
    }
    directory = SessionDirectory.bind(settings)
    return Ingress.options(num_replicas=settings.ingress_replicas).bind(settings, directory, pools)


default_app = app()
