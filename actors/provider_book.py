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
from collections.abc import Callable, Iterable
from typing import Any

from ray import serve
from ray.actor import ActorHandle

from relay.config import ProviderConfig, RelaySettings
from relay.errors import Conflict, InvalidRequest
from relay.providers.catalog import ProviderCatalog
from relay.providers.features import known_type
from relay.store import Store

from .names import PoolAddress, directory_name, registered_app_name, shared_pool_app
from .placement import deploy_dedicated_pool

__all__ = ["DirectoryProviders", "ProviderBook", "pool_deployments"]

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


class DirectoryProviders:
    """The provider calls of a ``SessionDirectory`` partition: partition 0 keeps the book, the others ask it."""

    book: ProviderBook | None
    partition: int
    partitions: int
    app_name: str
    actors: Callable[[], list[ActorHandle]]  # every session actor of this partition

    def _book(self) -> ProviderBook:
        if self.book is None:
            raise InvalidRequest(f"Providers are kept by directory partition 0, not {self.partition}")
        return self.book

    def _partition(self, partition: int) -> Any:
        return serve.get_deployment_handle(directory_name(partition), app_name=self.app_name)

    def list_providers(self) -> list[ProviderConfig]:
        return self._book().list()

    async def register_provider(self, config: ProviderConfig) -> ProviderConfig:
        """A shared provider is stored and versioned; a dedicated one gets its pool first. Nothing else restarts."""
        public = await self._book().register(config)
        if config.is_dedicated:
            # Every actor of every partition, live or pooled, opens the new pool's handle before the caller hears back
            # (the deploy took seconds; this ~0.3 s): the first turns sent to it do not each wait for a router.
            others = (
                self._partition(i).warm.remote(public.pool_app, public.provider_id) for i in range(1, self.partitions)
            )
            await asyncio.gather(self.warm(public.pool_app, public.provider_id), *others, return_exceptions=True)
        return public

    async def warm(self, pool_app: str | None, provider_id: str) -> None:
        """Every actor of this partition opens a handle to the pool now (a dedicated pool just registered)."""
        await asyncio.gather(
            *(actor.warm.remote(pool_app, provider_id) for actor in self.actors()), return_exceptions=True
        )

    async def unregister_provider(self, provider_id: str) -> None:
        await self._book().unregister(provider_id)

    async def _pools(self) -> list[ProviderConfig]:
        """The pool deployments, from the book; a partition without it asks partition 0 (best effort, as warming)."""
        if self.book is not None:
            return self.book.pools()
        try:
            providers = await asyncio.wait_for(self._partition(0).list_providers.remote(), timeout=10.0)
        except Exception:
            log.warning("partition 0 did not list the providers; a new actor warms no pool", exc_info=True)
            return []
        return pool_deployments(providers)


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
