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
from actors.names import SHARED_POOL, directory_name
from actors.placement import dedicated_options
from actors.provider_pool import ProviderPool
from actors.shared_pool import SharedPool
from relay.config import RelaySettings

__all__ = ["app", "default_app"]


def _shared_pool(settings: RelaySettings) -> Application:
    """Always deployed, even with every configured provider dedicated: registered providers join it."""
    shared = settings.shared_pool
    autoscaling = shared.autoscaling_config or settings.pool_autoscaling
    replicas = {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": shared.num_replicas}
    return SharedPool.options(name=SHARED_POOL, max_ongoing_requests=shared.max_ongoing_requests, **replicas).bind(
        settings
    )


def app(args: dict[str, Any] | None = None) -> Application:
    settings = RelaySettings.model_validate(args or {})
    pools = {
        p.provider_id: ProviderPool.options(**dedicated_options(p, settings.pool_autoscaling)).bind(
            p, settings.coalesce_base_s, settings.coalesce_per_window
        )
        for p in settings.providers
        if p.is_dedicated
    }
    pools[SHARED_POOL] = _shared_pool(settings)
    # One deployment of one replica per partition (actors.partitions says why not one deployment of N).
    directory = [
        SessionDirectory.options(name=directory_name(i)).bind(settings, i)
        for i in range(settings.sessions.directory_partitions)
    ]
    return Ingress.options(num_replicas=settings.ingress_replicas).bind(settings, directory, pools)


default_app = app()
