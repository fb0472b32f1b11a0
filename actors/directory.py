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

from relay.config import ProviderConfig, RelaySettings, live_cap_for
from relay.store import open_store

from .session_actor import SessionActor

__all__ = ["SessionDirectory"]

log = logging.getLogger("relay.directory")


@dataclass(eq=False, slots=True)
class _Host:
    actor: ActorHandle
    sessions: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Live:
    host: _Host
    user_id: str
    last_used: float


@serve.deployment(num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
class SessionDirectory:
    async def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings.sessions
        self.store_url = settings.store_url
        self.store = open_store(settings.store_url)
        self.max_actors = self.settings.max_actors or live_cap_for(ray.cluster_resources().get("CPU", 1))
        self.live: OrderedDict[str, _Live] = OrderedDict()
        self.hosts: list[_Host] = []
        self.pool: list[tuple[ActorHandle, float]] = []  # (blank actor, pooled since)
        self.creating = 0
        self.activating: dict[str, asyncio.Future[_Host]] = {}
        self.wanted = asyncio.Event()
        app_name = serve.get_replica_context().app_name
        self.providers: dict[str, ProviderConfig] = {
            p.provider_id: p.model_copy(update={"pool_app": app_name, "api_key": None}) for p in settings.providers
        }
        self.counters = {"activations": 0, "reactivations": 0, "passivations": 0, "created": 0, "cohosted": 0}
        self._tasks = [asyncio.create_task(self._grow()), asyncio.create_task(self._reap())]

    # activation

    async def activate(self, session_id: str | None, user_id: str) -> tuple[str, ActorHandle]:
        if session_id is None:
            session_id = self.store.create_session(user_id)["session_id"]
        elif (entry := self.live.get(session_id)) is not None:
            if entry.user_id != user_id:
                self.store.owned_session(session_id, user_id)
            entry.last_used = time.monotonic()
            self.live.move_to_end(session_id)
            return session_id, entry.host.actor
        elif self.store.get_session(session_id) is None:
            self.store.create_session(user_id, session_id)
        else:
            self.store.owned_session(session_id, user_id)
            self.counters["reactivations"] += 1
        pending = self.activating.get(session_id)
        if pending is not None:
            return session_id, (await asyncio.shield(pending)).actor
        future: asyncio.Future[_Host] = asyncio.get_running_loop().create_future()
        self.activating[session_id] = future
        try:
            host = await self._place()
            await host.actor.activate.remote(session_id, user_id)
            host.sessions.add(session_id)
            self.live[session_id] = _Live(host, user_id, time.monotonic())
            self.counters["activations"] += 1
            future.set_result(host)
            return session_id, host.actor
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self.activating[session_id]

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
        host = _Host(await self._create())
        self.hosts.append(host)
        return host

    async def _create(self) -> ActorHandle:
        self.creating += 1
        try:
            actor = SessionActor.remote(self.store_url)
            await actor.hosted.remote()
            self.counters["created"] += 1
            return actor
        finally:
            self.creating -= 1

    def _actor_count(self) -> int:
        return len(self.hosts) + len(self.pool) + self.creating

    def _short(self) -> bool:
        """More actors are wanted: the pool is below size, or sessions share actors."""
        packed = len(self.live) > len(self.hosts)
        return self._actor_count() < self.max_actors and (len(self.pool) < self.settings.warm_pool_size or packed)

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
            await asyncio.sleep(max(0.5, self.settings.idle_ttl_s / 4))
            try:
                await self.passivate_idle(self.settings.idle_ttl_s)
                self._trim_pool()
                excess = len(self.live) - self.settings.max_live_sessions
                for session_id in list(self.live)[: max(0, excess)]:
                    await self._passivate(session_id, 0.0)
            except Exception:
                log.exception("passivation failed")

    async def _passivate(self, session_id: str, min_idle_s: float) -> bool:
        entry = self.live.get(session_id)
        if entry is None or session_id in self.activating:
            return False
        try:
            if not await entry.host.actor.passivate.remote(session_id, min_idle_s):
                return False
        except ray.exceptions.RayActorError:
            self._drop_host(entry.host)
            return False
        self.live.pop(session_id, None)
        entry.host.sessions.discard(session_id)
        self.counters["passivations"] += 1
        if not entry.host.sessions:
            self.hosts.remove(entry.host)
            self.pool.append((entry.host.actor, time.monotonic()))
        return True

    def _trim_pool(self) -> None:
        """Kill pooled actors beyond the warm size only after ``pool_idle_ttl_s``: steady load never churns."""
        now = time.monotonic()
        while len(self.pool) > self.settings.warm_pool_size and now - self.pool[0][1] > self.settings.pool_idle_ttl_s:
            ray.kill(self.pool.pop(0)[0])

    async def passivate_idle(self, min_idle_s: float) -> list[str]:
        """Passivate every live session idle for ``min_idle_s``; returns their ids."""
        return [sid for sid in list(self.live) if await self._passivate(sid, min_idle_s)]

    def _drop_host(self, host: _Host) -> None:
        for session_id in host.sessions:
            self.live.pop(session_id, None)
        if host in self.hosts:
            self.hosts.remove(host)

    async def forget(self, session_id: str, actor: ActorHandle) -> None:
        """The ingress found this actor dead: its sessions restart from the store when next used."""
        entry = self.live.get(session_id)
        if entry is not None and entry.host.actor == actor:
            self._drop_host(entry.host)

    def actors(self) -> list[ActorHandle]:
        """Every session actor process, live or pooled (for benchmarks and diagnostics)."""
        return [host.actor for host in self.hosts] + [actor for actor, _ in self.pool]

    # providers

    def list_providers(self) -> list[ProviderConfig]:
        return list(self.providers.values())

    def add_provider(self, config: ProviderConfig) -> None:
        self.providers[config.provider_id] = config

    def stats(self) -> dict[str, Any]:
        stored = self.store.count_sessions()
        return {
            "live": len(self.live),
            "live_actors": len(self.hosts),
            "pooled": len(self.pool),
            "creating": self.creating,
            "max_actors": self.max_actors,
            "warm_pool_size": self.settings.warm_pool_size,
            "idle_ttl_s": self.settings.idle_ttl_s,
            "stored": stored,
            "passivated": stored - len(self.live),
            **self.counters,
        }
