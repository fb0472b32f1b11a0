"""``ProviderBook``: the providers the cluster serves, where each one's pool runs, and their registration.

Kept by partition 0 of the ``SessionDirectory`` (one owner, so one answer to "where is this
provider's pool"). Registering a shared provider writes the store and gives it a
new version in its ``pool_app``: nothing is deployed, and every shared pool
replica builds it on its next request from the store (``actors.shared_pool``). A
dedicated provider gets its own Serve app, placed within a bounded time
(``actors.placement``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable

from ray import serve

from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict
from relay.providers.catalog import ProviderCatalog
from relay.providers.features import known_type
from relay.store import Store

from .names import PoolAddress, registered_app_name, shared_pool_app
from .placement import deploy_dedicated_pool

__all__ = ["ProviderBook", "pool_deployments"]

log = logging.getLogger("relay.directory")


class ProviderBook:
    def __init__(self, settings: RelaySettings, store: Store, app_name: str) -> None:
        self.app_name = app_name
        self.coalesce = (settings.coalesce_base_s, settings.coalesce_per_window)
        self.placement_timeout_s = settings.pool_placement_timeout_s
        self.catalog = ProviderCatalog(store, settings)
        # Configured providers only change with a redeploy, which replaces the shared pool's replicas too.
        self.providers: dict[str, ProviderConfig] = {
            p.provider_id: _public(p, app_name if p.is_dedicated else shared_pool_app(app_name, "config"))
            for p in settings.providers
        }

    def list(self) -> list[ProviderConfig]:
        return list(self.providers.values())

    def pools(self) -> list[ProviderConfig]:
        return pool_deployments(self.providers.values())

    async def register(self, config: ProviderConfig) -> ProviderConfig:
        """Shared: store it and version it (milliseconds). Dedicated: deploy its pool first, then store it."""
        if config.provider_id in self.providers:
            raise Conflict(f"Provider '{config.provider_id}' is already registered", param="provider_id")
        # An unknown provider_type is a 400 now, not a pool that fails every request. Without importing a built-in
        # type's SDK here: the first openai registration waited ~2 s for that import (benchmarks/README.md).
        known_type(config)
        if config.is_dedicated:
            pool_app = await asyncio.to_thread(
                deploy_dedicated_pool, config, *self.coalesce, timeout_s=self.placement_timeout_s
            )
        else:
            pool_app = _new_version(self.app_name)
        try:
            self.catalog.save(config)  # the directory's store is used from its event loop only
        except BaseException:
            if config.is_dedicated:
                await asyncio.to_thread(serve.delete, pool_app)
            raise
        public = self.providers[config.provider_id] = _public(config, pool_app)
        return public

    async def unregister(self, provider_id: str) -> None:
        self.catalog.delete(provider_id)
        config = self.providers.pop(provider_id, None)
        if config is not None and config.is_dedicated and config.pool_app:
            await asyncio.to_thread(serve.delete, config.pool_app)

    async def restore(self) -> None:
        """Registered providers come back after a restart; a dedicated pool that is gone is deployed again."""
        running = set(serve.status().applications)
        for config in self.catalog.load():
            if config.provider_id in self.providers:
                continue
            if not config.is_dedicated:
                # A new version: replicas rebuild it from the store, whatever they held before the restart.
                self.providers[config.provider_id] = _public(config, _new_version(self.app_name))
                continue
            app_name = registered_app_name(config.provider_id)
            try:
                if app_name not in running:
                    await asyncio.to_thread(
                        deploy_dedicated_pool, config, *self.coalesce, timeout_s=self.placement_timeout_s
                    )
                self.providers[config.provider_id] = _public(config, app_name)
            except Exception:
                log.exception("restoring provider %s failed", config.provider_id)


def pool_deployments(providers: Iterable[ProviderConfig]) -> list[ProviderConfig]:
    """One provider per pool deployment: what a new process opens a handle to (once for the shared pool)."""
    seen: dict[tuple[str, str], ProviderConfig] = {}
    for config in providers:
        address = PoolAddress.of(config.pool_app, config.provider_id)
        seen.setdefault((address.app, address.deployment), config)
    return list(seen.values())


def _public(config: ProviderConfig, pool_app: str) -> ProviderConfig:
    """What the rest of the cluster sees: where the pool runs, and never the key."""
    return config.model_copy(update={"pool_app": pool_app, "api_key": None})


def _new_version(app_name: str) -> str:
    # Random, not a counter: a restarted directory must never hand out a version a replica already holds.
    return shared_pool_app(app_name, secrets.token_hex(4))
