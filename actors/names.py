"""Serve names shared by the actors; a module of its own so session actors import no provider SDK.

A provider's ``pool_app`` (set by the directory) says where its pool runs:
- a dedicated pool: the Serve app's name; the deployment is ``pool-<provider_id>``;
- the shared pool: ``<app>|shared|<version>``; the deployment is ``pool-shared``, and the request carries
  ``<provider_id>@<version>`` as Serve's multiplexed model id. A new version (a re-registration) is a new model
  id, so every replica builds the new config on its next request and the old one ages out of its LRU.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "DIRECTORY",
    "SHARED_POOL",
    "PoolAddress",
    "directory_name",
    "pool_name",
    "registered_app_name",
    "shared_pool_app",
]

SHARED_POOL = "pool-shared"
# Partition 0 of the session directory keeps the deployment's historic name: tools and tests that look it up by
# name (and ``actors.evaluation``'s provider lookup) find the partition that also keeps the provider book.
DIRECTORY = "SessionDirectory"
_SHARED_MARK = "|shared|"


def pool_name(provider_id: str) -> str:
    return f"pool-{provider_id}"


def directory_name(partition: int) -> str:
    return DIRECTORY if partition == 0 else f"{DIRECTORY}-{partition}"


def registered_app_name(provider_id: str) -> str:
    return f"relay-provider-{provider_id}"


def shared_pool_app(app_name: str, version: str) -> str:
    return f"{app_name}{_SHARED_MARK}{version}"


class PoolAddress(NamedTuple):
    """The deployment that serves a provider, and the multiplexed model id its requests carry (shared pool)."""

    app: str
    deployment: str
    model_id: str | None

    @classmethod
    def of(cls, pool_app: str | None, provider_id: str) -> PoolAddress:
        app, mark, version = (pool_app or "relay").partition(_SHARED_MARK)
        if mark:
            return cls(app, SHARED_POOL, f"{provider_id}@{version}")
        return cls(app, pool_name(provider_id), None)

    @property
    def shared(self) -> bool:
        return self.model_id is not None
