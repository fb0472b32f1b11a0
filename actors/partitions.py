"""The session directory partitioned by session id: which partition owns a session, and the ingress's view of all.

Single activation needs exactly one owner per session at every moment, a replica restart included. Two ways to
spread the directory over N processes were weighed (Ray 2.60):

- One deployment of N replicas behind Serve's consistent-hash router
  (``ray.serve.experimental.consistent_hash_router.ConsistentHashRouter``, ray-project/ray#62906). It gives
  affinity, not ownership: the ring is built from the live replica set, placed by each replica's random
  ``unique_id``, so a restarted replica lands elsewhere on the ring and its sessions move to a neighbour that may
  already have reactivated them; every handle's router rebuilds its ring when its own copy of the replica
  broadcast arrives, so two ingress replicas can send one session to two replicas while the set changes; and a
  replica that pushes back under load hands the request to up to two fallback replicas (0 with
  ``num_fallback_replicas``, but the ring changes remain). Any of these is a second owner.
- N deployments of exactly one replica each (chosen). Partition ``i`` is the deployment
  ``actors.names.directory_name(i)``; partition 0 keeps the name ``SessionDirectory``. A session's partition is a
  pure function of its id and N (``partition_of``), never of which replicas are up: while a partition's replica
  restarts, its sessions wait for it (Serve queues calls to a deployment with no running replica) instead of
  finding another owner, and the session actors it created die with it (Ray fate-shares an actor with its owner),
  so the new replica starts with no session live anywhere. Each partition refuses a session that is not its own,
  so an ingress built for another N (a redeploy changing ``sessions.directory_partitions``) cannot create a
  second owner either. Only public Serve API is used.

The hash is jump consistent hash (Lamping and Veach, 2014) over 64 bits of BLAKE2b: uniform, the same in every
process and Python version (``hash()`` is salted per process), and growing N from n to n+1 moves only 1/(n+1)
of the sessions. A new session's id is minted before it is routed (``mint_session_id``), by the ingress.

The cluster's actor cap, warm pool size and live-session cap are split between the partitions (``share``), so
their totals stay what one directory had, but for a floor of one actor and one warm actor per partition. Each
partition reports its share in ``stats``, and ``merge_stats`` adds them up for the ingress, ``relay status`` and
``/readyz``. The provider book lives in partition 0 only: registration is not duplicated, and the other partitions
ask partition 0 which pools a new actor warms.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from relay.store import new_id

from .names import directory_name

__all__ = ["DirectoryPartitions", "merge_stats", "mint_session_id", "partition_of", "share"]

_MASK = (1 << 64) - 1
# Values every partition reports alike (settings, and the store's count): kept once, not summed.
_SAME = frozenset({"idle_ttl_s", "pool_idle_ttl_s", "retention_days", "stored"})


def partition_of(session_id: str, partitions: int) -> int:
    """The partition that owns ``session_id`` among ``partitions``: jump consistent hash of its BLAKE2b digest."""
    key = int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "big")
    bucket, jump = -1, 0
    while jump < partitions:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & _MASK
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def mint_session_id(partition: int | None = None, partitions: int = 1) -> str:
    """A new session id; with ``partition``, one that this partition owns (about ``partitions`` tries)."""
    while True:
        session_id = new_id("sess")
        if partition is None or partition_of(session_id, partitions) == partition:
            return session_id


def share(total: int, partitions: int, partition: int, *, floor: int = 0) -> int:
    """Partition ``partition``'s part of ``total``: the parts differ by at most one and add up to ``total``.

    ``floor`` keeps a part from reaching zero where zero would mean no service (the actor cap): then the parts
    add up to more than ``total`` when ``total`` is below ``partitions * floor``.
    """
    return max(floor, total // partitions + (partition < total % partitions))


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One directory's ``stats`` from every partition's: counts and caps added, settings and the store's count once."""
    merged = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            if key not in _SAME:
                merged[key] += value
    merged["passivated"] = merged["stored"] - merged["live"]
    merged["partitions"] = len(parts)
    return merged


class DirectoryPartitions:
    """What a caller of the directory holds: a handle per partition, and the calls that span them."""

    def __init__(self, handles: Sequence[DeploymentHandle]) -> None:
        self.handles = list(handles)

    @classmethod
    def of_app(cls, app_name: str, partitions: int) -> DirectoryPartitions:
        """Handles to a running app's partitions, by name (tests, benchmarks, a second ingress)."""
        return cls([serve.get_deployment_handle(directory_name(i), app_name=app_name) for i in range(partitions)])

    def owner(self, session_id: str) -> DeploymentHandle:
        return self.handles[partition_of(session_id, len(self.handles))]

    @property
    def providers(self) -> DeploymentHandle:
        """Partition 0, which keeps the provider book."""
        return self.handles[0]

    async def stats(self) -> dict[str, Any]:
        return merge_stats(await asyncio.gather(*(handle.stats.remote() for handle in self.handles)))

    async def locate(self, session_id: str) -> ActorHandle | None:
        return await self.owner(session_id).locate.remote(session_id)

    async def activations(self, session_ids: Sequence[str]) -> dict[str, int]:
        by_partition: dict[int, list[str]] = defaultdict(list)
        for session_id in session_ids:
            by_partition[partition_of(session_id, len(self.handles))].append(session_id)
        counts: dict[str, int] = {}
        for found in await asyncio.gather(
            *(self.handles[i].activations.remote(ids) for i, ids in by_partition.items())
        ):
            counts |= found
        return {session_id: counts[session_id] for session_id in session_ids}

    async def actors(self) -> list[ActorHandle]:
        return [actor for part in await asyncio.gather(*(h.actors.remote() for h in self.handles)) for actor in part]

    async def check(self) -> None:
        """Every partition answers and counts the partitions as this caller does; raises otherwise."""
        answers = await asyncio.gather(*(handle.identity.remote() for handle in self.handles))
        for index, (partition, partitions) in enumerate(answers):
            if (partition, partitions) != (index, len(self.handles)):
                raise RuntimeError(f"partition {index} says it is {partition} of {partitions}")
