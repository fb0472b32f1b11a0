"""``SessionDirectory``: the single owner of session activation.

One owner means a session never has two live actors (``get_if_exists`` raced:
Ray #41324, #49480). Creating an actor costs ~0.8 s and an idle one ~0.9 % of a
core (DESIGN.md), so the directory keeps a small warm pool of blank actors,
caps the actor processes by the cluster's cores, passivates idle sessions after
a short TTL and recycles emptied actors into the pool instead of killing them;
the pool shrinks back to its warm size only after a longer idle time. Activation
never waits for a process start while any actor is up: past the cap, or while a
new actor starts in the background, the session is co-hosted on the least
loaded actor.

Live sessions are capped too (``max_live_sessions``): each new activation, and
a periodic sweep, passivates the least recently used idle sessions beyond it,
skipping busy ones. The same sweep passivates sessions idle past ``idle_ttl_s``,
trims the pool and applies retention (``retention_days``).

The directory is partitioned by session id (``actors.partitions``, which says why N one-replica deployments and
not Serve's consistent-hash router): each partition is one replica of its own deployment, owns the sessions
whose id hashes to it, and runs all of the above over its share of the caps. Partition 0 also keeps the
provider book.

A brand-new session is placed (``place``), not activated: its first chat activates it on the actor, carrying the
placement's epoch, so a placement passivated before that chat can never activate the session a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle

from relay.config import RelaySettings, SessionSettings, live_cap_for
from relay.errors import Conflict, InvalidRequest, Overloaded
from relay.store import open_store

from .partitions import mint_session_id, partition_of, share
from .provider_book import DirectoryProviders, ProviderBook
from .session_actor import SessionActor

__all__ = ["SessionDirectory"]

log = logging.getLogger("relay.directory")

# The sweep runs at least this often, whatever the TTLs: the live cap and the pool's trim depend on it too.
_SWEEP_MAX_S = 30.0
_TUNABLE = frozenset({"warm_pool_size", "max_live_sessions", "idle_ttl_s", "pool_idle_ttl_s", "retention_days"})


@dataclass(eq=False, slots=True)
class _Host:
    actor: ActorHandle
    sessions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Live:
    host: _Host
    user_id: str
    last_used: float
    epoch: int = 0  # a placement handed out by ``place`` (activated by its first chat); 0: activated here


@serve.deployment(num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
class SessionDirectory(DirectoryProviders):
    async def __init__(self, settings: RelaySettings, partition: int = 0) -> None:
        """``settings.sessions`` holds the cluster's totals; this partition takes its share of each cap."""
        self.partition = partition
        self.partitions = settings.sessions.directory_partitions
        self.app_name = serve.get_replica_context().app_name
        self.settings = settings.sessions
        self.store_url = settings.store_url
        self.default_provider = settings.default_provider
        self.context = settings.context
        self.prices = settings.prices
        self.store = open_store(settings.store_url)
        cluster_actors = self.settings.max_actors or live_cap_for(ray.cluster_resources().get("CPU", 1))
        self.max_actors = share(cluster_actors, self.partitions, partition, floor=1)
        self.live: OrderedDict[str, _Live] = OrderedDict()
        self.hosts: list[_Host] = []
        self.pool: list[tuple[ActorHandle, float]] = []  # (blank actor, pooled since)
        self.creating = 0
        self.activating: dict[str, asyncio.Future[_Host]] = {}
        # Activations of each live session: more than one would be a double activation (dropped on passivation).
        self.activation_counts: dict[str, int] = {}
        self.epoch = 0  # the last placement handed out by ``place``: its actor activates on the first chat
        self.wanted = asyncio.Event()
        self.retuned = asyncio.Event()  # wakes the sweep when the lifecycle settings change
        self._room = asyncio.Lock()  # one LRU pass at a time: concurrent ones would passivate too many
        self._cold = asyncio.Lock()
        self._started = asyncio.Event()  # set whenever a process start ends, well or not
        # One book for the cluster, in partition 0: a registration is made and versioned once.
        self.book = ProviderBook(settings, self.store, self.app_name) if partition == 0 else None
        self.counters = {
            "lookups": 0,  # activate calls, live sessions included: what the ingress's placements spare
            "activations": 0,
            "reactivations": 0,
            "passivations": 0,
            "lru_passivations": 0,  # the part of passivations made to keep under max_live_sessions
            "expired": 0,  # stored sessions deleted by retention
            "created": 0,
            "cohosted": 0,
        }
        # Before the first request: registered providers must be routable as soon as the directory answers.
        if self.book is not None:
            await self.book.restore()
        self._tasks = [asyncio.create_task(self._grow()), asyncio.create_task(self._reap())]

    # activation

    async def activate(self, session_id: str | None, user_id: str, new: bool = False) -> tuple[str, ActorHandle]:
        """The session's actor, activating it if needed.

        ``new``: the caller minted ``session_id`` for a session nobody has seen (the ingress does, to route it to
        its partition), so it is created without a read first. A new session's actor has nothing to read back.
        """
        self.counters["lookups"] += 1
        if session_id is None:
            session_id, new = mint_session_id(self.partition, self.partitions), True
        else:
            self._own(session_id)
        if new:
            await self.store.offload(self.store.create_session, user_id, session_id)
        elif (entry := self.live.get(session_id)) is not None:
            if entry.user_id != user_id:
                await self.store.offload(self.store.owned_session, session_id, user_id)
            entry.last_used = time.monotonic()
            self.live.move_to_end(session_id)
            return session_id, entry.host.actor
        elif await self.store.offload(self.store.claim_session, session_id, user_id):
            new = True
        elif (entry := self.live.get(session_id)) is not None:  # activated by another call while the store answered
            return session_id, entry.host.actor
        else:
            self.counters["reactivations"] += 1
        pending = self.activating.get(session_id)
        if pending is not None:
            return session_id, (await asyncio.shield(pending)).actor
        future: asyncio.Future[_Host] = asyncio.get_running_loop().create_future()
        self.activating[session_id] = future
        try:
            await self._make_room()  # before placing: an actor emptied here is the one this session gets
            host = await self._activate_somewhere(session_id, user_id, new)
            host.sessions.add(session_id)
            self.live[session_id] = _Live(host, user_id, time.monotonic())
            self.counters["activations"] += 1
            self.activation_counts[session_id] = self.activation_counts.get(session_id, 0) + 1
            future.set_result(host)
            return session_id, host.actor
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self.activating[session_id]

    async def place(self, session_id: str, user_id: str) -> tuple[ActorHandle, int]:
        """A brand-new session, its id minted by the caller: stored and placed on an actor, which is not called.

        Returns (actor, epoch); the caller's first chat carries the epoch and the actor activates the session on it:
        one round trip fewer before a new session's first token (issue 17, lever 2). A placement the directory
        passivates before that chat arrives has its epoch retired on the actor (``SessionActor.passivate``): the
        late chat is refused (``SessionMoved``), and the session is activated once, through ``activate``.
        """
        self.counters["lookups"] += 1
        self._own(session_id)
        await self.store.offload(self.store.create_session, user_id, session_id)
        await self._make_room(incoming=1)  # not in self.activating: nothing else can ask for this new id
        host = await self._place()
        host.sessions.add(session_id)
        self.epoch += 1
        self.live[session_id] = _Live(host, user_id, time.monotonic(), self.epoch)
        self.counters["activations"] += 1
        self.activation_counts[session_id] = self.activation_counts.get(session_id, 0) + 1
        return host.actor, self.epoch

    def _own(self, session_id: str) -> None:
        if partition_of(session_id, self.partitions) != self.partition:
            # Only while a redeploy changes the partition count: the caller's mapping is not this partition's.
            raise Overloaded(
                f"Session '{session_id}' belongs to another directory partition; retry shortly", retry_after=1.0
            )

    async def _activate_somewhere(self, session_id: str, user_id: str, new: bool) -> _Host:
        """Place and activate; an actor that turns out dead (its node is gone) is dropped and the next one tried."""
        for _ in range(self.max_actors + 1):
            host = await self._place()
            try:
                await host.actor.activate.remote(session_id, user_id, new)
                return host
            except ray.exceptions.RayActorError:
                self._drop_host(host)
        raise Overloaded("No session actor could be started; retry shortly", retry_after=1.0)

    async def _place(self) -> _Host:
        """A pooled actor, else co-host on the least loaded one while more start in the background."""
        if self.pool:
            host = _Host(self.pool.pop()[0])
            self.hosts.append(host)
            self.wanted.set()
            return host
        if self.hosts:
            self.wanted.set()
            self.counters["cohosted"] += 1
            return min(self.hosts, key=lambda h: len(h.sessions))
        # No actor up: concurrent first activations share one process start, the pool's if one is under way (a start
        # each overshot the actor cap).
        async with self._cold:
            while not self.pool and not self.hosts and self.creating:  # _grow's start: take it, do not add one
                self._started.clear()
                await self._started.wait()
            if self.pool or self.hosts:
                return await self._place()
            host = _Host(await self._create())
            self.hosts.append(host)
            return host

    async def _create(self) -> ActorHandle:
        self.creating += 1
        try:
            actor = SessionActor.options(resources=self.settings.actor_resources or None).remote(
                self.store_url, self.context, self.prices
            )
            await actor.hosted.remote()
            await self._warm(actor)
            self.counters["created"] += 1
            return actor
        finally:
            self.creating -= 1
            self._started.set()

    async def _warm(self, actor: ActorHandle) -> None:
        """Start opening each pool deployment's handle in a new actor (the shared pool's once); nobody waits for it.

        A handle's first call waits ~0.3 s for its router to learn the pool's replicas (Decision 3 in
        benchmarks/README.md): paid here, not by the first turn the actor serves on each pool.
        """
        for provider in await self._pools():
            actor.warm.remote(provider.pool_app, provider.provider_id)

    def _share(self, total: int, floor: int = 0) -> int:
        return share(total, self.partitions, self.partition, floor=floor)

    def _warm_size(self) -> int:
        """This partition's warm pool: at least one actor while any is wanted.

        Without one, the partition's first new session would wait for a process start (~0.8 s). The cluster's pool
        is then max(warm_pool_size, partitions).
        """
        return self._share(self.settings.warm_pool_size, floor=min(1, self.settings.warm_pool_size))

    def _actor_count(self) -> int:
        return len(self.hosts) + len(self.pool) + self.creating

    def _short(self) -> bool:
        """More actors are wanted: the pool is below size, or sessions share actors."""
        packed = len(self.live) > len(self.hosts)
        return self._actor_count() < self.max_actors and (len(self.pool) < self._warm_size() or packed)

    # background upkeep

    async def _grow(self) -> None:
        while True:
            try:
                while self._short():
                    self.pool.append((await self._create(), time.monotonic()))
            except Exception:
                log.exception("starting a session actor failed")
            self.wanted.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wanted.wait(), timeout=5.0)

    async def _reap(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.retuned.wait(), timeout=self._sweep_interval())
            self.retuned.clear()
            try:
                await self.passivate_idle(self.settings.idle_ttl_s)
                await self._make_room()
                self._trim_pool()
                if self.settings.retention_days is not None:
                    self.expire(time.time() - self.settings.retention_days * 86400)
            except Exception:
                log.exception("passivation failed")

    def _sweep_interval(self) -> float:
        shortest = min(self.settings.idle_ttl_s, self.settings.pool_idle_ttl_s)
        return min(_SWEEP_MAX_S, max(0.5, shortest / 4))

    async def _make_room(self, incoming: int = 0) -> int:
        """Passivate least recently used idle sessions until the live, activating and ``incoming`` ones fit the cap.

        A busy session is skipped, not waited for, and the pass goes on down the LRU order: the cap stays
        exceeded only while every session over it is mid-turn. A session handed out for a turn that has not
        started yet can be passivated too; its caller gets ``SessionMoved`` and activates it again.
        """
        cap = self._share(self.settings.max_live_sessions, floor=1)
        if len(self.live) + len(self.activating) + incoming <= cap:
            return 0
        passivated = 0
        async with self._room:
            for session_id in await self._least_recently_used():
                if len(self.live) + len(self.activating) + incoming <= cap:
                    break
                if await self._passivate(session_id, 0.0):
                    passivated += 1
        self.counters["lru_passivations"] += passivated
        return passivated

    async def _least_recently_used(self) -> list[str]:
        """Live sessions, least recently used first, by what their actors report.

        The ingress calls a live session's actor directly (``RayBackend.placements``), so the directory does not see
        every use: each actor tells how long each of its sessions has been idle (an age, comparable across nodes).
        """

        async def ages(host: _Host) -> dict[str, float]:
            try:
                return dict(await asyncio.wait_for(host.actor.idle_ages.remote(), timeout=5.0))
            except Exception:
                return {}

        reported: dict[str, float] = {}
        for found in await asyncio.gather(*(ages(host) for host in list(self.hosts))):
            reported |= found
        # A session its actor does not report (the actor did not answer, or a placement awaits its first chat) is as
        # idle as the directory last saw it; the directory's own order breaks ties.
        now = time.monotonic()
        rank = {session_id: i for i, session_id in enumerate(self.live)}
        return sorted(rank, key=lambda sid: (-reported.get(sid, now - self.live[sid].last_used), rank[sid]))

    async def _passivate(self, session_id: str, min_idle_s: float) -> bool:
        entry = self.live.get(session_id)
        if entry is None or session_id in self.activating:
            return False
        try:
            if not await entry.host.actor.passivate.remote(session_id, min_idle_s, entry.epoch):
                return False
        except ray.exceptions.RayActorError:
            self._drop_host(entry.host)
            return False
        self.live.pop(session_id, None)
        self.activation_counts.pop(session_id, None)
        entry.host.sessions.discard(session_id)
        self.counters["passivations"] += 1
        if not entry.host.sessions:
            self.hosts.remove(entry.host)
            self.pool.append((entry.host.actor, time.monotonic()))
        return True

    def _trim_pool(self) -> None:
        """Kill pooled actors beyond the warm size only after ``pool_idle_ttl_s``: steady load never churns."""
        now, warm = time.monotonic(), self._warm_size()
        while len(self.pool) > warm and now - self.pool[0][1] > self.settings.pool_idle_ttl_s:
            ray.kill(self.pool.pop(0)[0])

    async def evict(self, session_id: str) -> None:
        """Take a session out of memory before it is deleted; a running turn makes that a 409."""
        if session_id in self.live and not await self._passivate(session_id, 0.0):
            raise Conflict(f"Session '{session_id}' has a turn running; retry when it ends", param="session_id")

    async def passivate_idle(self, min_idle_s: float) -> list[str]:
        """Passivate every live session idle for ``min_idle_s``; returns their ids."""
        # A session handed out less than min_idle_s ago cannot have idled that long: no need to ask its actor.
        handed_before = time.monotonic() - min_idle_s
        candidates = [sid for sid, entry in self.live.items() if entry.last_used <= handed_before]
        return [sid for sid in candidates if await self._passivate(sid, min_idle_s)]

    def expire(self, idle_before: float) -> int:
        """Retention: delete this partition's stored sessions untouched since ``idle_before``; live ones stay."""
        deleted = self.store.delete_expired(idle_before, keep=self._keeps)
        self.counters["expired"] += deleted
        return deleted

    def _keeps(self, session_id: str) -> bool:
        """Retention spares live and activating sessions, and another partition's: only their owner knows them."""
        return (
            session_id in self.live
            or session_id in self.activating
            or partition_of(session_id, self.partitions) != self.partition
        )

    def tune(self, **changes: Any) -> dict[str, Any]:
        """Change lifecycle settings of the running directory without a redeploy; returns the values replaced.

        The sweep wakes at once, so a lower cap or a shorter TTL takes effect now (operators, benchmarks, tests).
        Values are the cluster's totals, as in the settings: tune every partition alike.
        """
        unknown = sorted(set(changes) - _TUNABLE)
        if unknown:
            raise InvalidRequest(
                f"Not a tunable lifecycle setting: {', '.join(unknown)}; use {', '.join(sorted(_TUNABLE))}",
                param=unknown[0],
            )
        previous = {key: getattr(self.settings, key) for key in changes}
        self.settings = SessionSettings.model_validate(self.settings.model_dump() | changes)
        self.retuned.set()
        self.wanted.set()
        return previous

    def _drop_host(self, host: _Host) -> None:
        for session_id in host.sessions:
            self.live.pop(session_id, None)
            self.activation_counts.pop(session_id, None)
        if host in self.hosts:
            self.hosts.remove(host)

    async def forget(self, session_id: str, actor: ActorHandle) -> None:
        """The ingress found this actor dead: its sessions restart from the store when next used.

        One death often means more (a lost node takes all its actors), so every other actor is checked too,
        before the next activation can be placed on a corpse.
        """
        entry = self.live.get(session_id)
        if entry is not None and entry.host.actor == actor:
            self._drop_host(entry.host)
        await self._prune_dead()

    async def _prune_dead(self) -> None:
        async def alive(actor: ActorHandle) -> bool:
            # Only Ray's word makes an actor dead. One that is merely slow (a busy host, a loaded machine) stays:
            # dropping it would leak its process and let its sessions be activated a second time elsewhere.
            try:
                await asyncio.wait_for(actor.hosted.remote(), timeout=5.0)
            except ray.exceptions.RayActorError:
                return False
            except TimeoutError:
                log.warning("a session actor did not answer a liveness probe in 5 s; kept")
            return True

        hosts = list(self.hosts)
        pooled = [actor for actor, _ in self.pool]
        # One round for all: a probe can wait out its timeout, and two rounds would wait twice.
        checks = await asyncio.gather(*(alive(h.actor) for h in hosts), *map(alive, pooled))
        for host, ok in zip(hosts, checks[: len(hosts)], strict=True):
            if not ok:
                self._drop_host(host)
        dead = [actor for actor, ok in zip(pooled, checks[len(hosts) :], strict=True) if not ok]
        self.pool = [entry for entry in self.pool if entry[0] not in dead]  # _grow may have added some meanwhile
        self.wanted.set()

    def locate(self, session_id: str) -> ActorHandle | None:
        """The actor hosting a live session (diagnostics and failure tests)."""
        entry = self.live.get(session_id)
        return entry.host.actor if entry else None

    def activations(self, session_ids: list[str]) -> dict[str, int]:
        return {session_id: self.activation_counts.get(session_id, 0) for session_id in session_ids}

    def actors(self) -> list[ActorHandle]:
        """Every session actor process, live or pooled (for benchmarks and diagnostics)."""
        return [host.actor for host in self.hosts] + [actor for actor, _ in self.pool]

    def identity(self) -> tuple[int, int]:
        """(this partition, of how many): the ingress checks both agree with its own mapping (``/readyz``)."""
        return self.partition, self.partitions

    def stats(self) -> dict[str, Any]:
        stored = self.store.count_sessions()
        return {
            "live": len(self.live),
            "live_actors": len(self.hosts),
            "pooled": len(self.pool),
            "creating": self.creating,
            # this partition's shares: actors.partitions.merge_stats adds them up to the cluster's
            "max_actors": self.max_actors,
            "max_live_sessions": self._share(self.settings.max_live_sessions, floor=1),
            "warm_pool_size": self._warm_size(),
            "idle_ttl_s": self.settings.idle_ttl_s,
            "pool_idle_ttl_s": self.settings.pool_idle_ttl_s,
            "retention_days": self.settings.retention_days,
            "stored": stored,
            "passivated": stored - len(self.live),
            **self.counters,
        }
