"""``SessionDirectory``: the single owner of session activation.

One owner means a session never has two live actors (``get_if_exists`` raced:
Ray #41324, #49480). Creating an actor costs ~0.8 s and an idle one ~0.9 % of a
core (DESIGN.md), so the directory keeps a small warm pool of blank actors,
caps the live ones, passivates idle sessions after a short TTL and recycles
their actors instead of killing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle

from relay.config import ProviderConfig, RelaySettings, live_cap_for
from relay.errors import Overloaded
from relay.local import owned_session
from relay.store import open_store

from .session_actor import SessionActor

__all__ = ["SessionDirectory"]

log = logging.getLogger("relay.directory")


@dataclass(slots=True)
class _Live:
    actor: ActorHandle
    user_id: str
    last_used: float


@serve.deployment(num_replicas=1, max_ongoing_requests=4096, ray_actor_options={"num_cpus": 0})
class SessionDirectory:
    async def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings.sessions
        self.store_url = settings.store_url
        self.store = open_store(settings.store_url)
        self.cap = self.settings.max_live_sessions or live_cap_for(ray.cluster_resources().get("CPU", 1))
        self.live: OrderedDict[str, _Live] = OrderedDict()
        self.pool: list[ActorHandle] = []
        self.creating = 0
        self.activating: dict[str, asyncio.Future[ActorHandle]] = {}
        self.freed = asyncio.Condition()
        app_name = serve.get_replica_context().app_name
        self.providers: dict[str, ProviderConfig] = {
            p.provider_id: p.model_copy(update={"pool_app": app_name, "api_key": None}) for p in settings.providers
        }
        self.counters = {"activations": 0, "reactivations": 0, "passivations": 0, "created": 0}
        self._tasks = [asyncio.create_task(self._refill()), asyncio.create_task(self._reap())]

    # activation

    async def activate(self, session_id: str | None, user_id: str) -> tuple[str, ActorHandle]:
        if session_id is None:
            session_id = self.store.create_session(user_id)["session_id"]
        elif (entry := self.live.get(session_id)) is not None:
            if entry.user_id != user_id:
                owned_session(self.store, session_id, user_id)
            entry.last_used = time.monotonic()
            self.live.move_to_end(session_id)
            return session_id, entry.actor
        else:
            if self.store.get_session(session_id) is None:
                self.store.create_session(user_id, session_id)
            else:
                owned_session(self.store, session_id, user_id)
                self.counters["reactivations"] += 1
        pending = self.activating.get(session_id)
        if pending is not None:
            return session_id, await asyncio.shield(pending)
        future: asyncio.Future[ActorHandle] = asyncio.get_running_loop().create_future()
        self.activating[session_id] = future
        try:
            actor = await self._take_actor()
            await actor.activate.remote(session_id, user_id)
            self.live[session_id] = _Live(actor, user_id, time.monotonic())
            self.counters["activations"] += 1
            future.set_result(actor)
            return session_id, actor
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self.activating[session_id]

    async def _take_actor(self) -> ActorHandle:
        """Warm pool first, then the least recently used idle session, then a new process."""
        deadline = time.monotonic() + self.settings.activation_timeout_s
        while True:
            if self.pool:
                return self.pool.pop()
            if len(self.live) + self.creating >= self.cap:
                actor = await self._evict_lru()
                if actor is not None:
                    return actor
            else:
                return await self._create()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Overloaded(f"All {self.cap} live sessions are busy; retry shortly", retry_after=1.0)
            async with self.freed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.freed.wait(), timeout=min(remaining, 0.5))

    async def _create(self) -> ActorHandle:
        self.creating += 1
        try:
            actor = SessionActor.remote(self.store_url)
            await actor.hosted.remote()
            self.counters["created"] += 1
            return actor
        finally:
            self.creating -= 1

    async def _evict_lru(self) -> ActorHandle | None:
        for session_id in list(self.live):
            actor = await self._passivate(session_id, min_idle_s=0.0)
            if actor is not None:
                return actor
        return None

    async def _passivate(self, session_id: str, min_idle_s: float) -> ActorHandle | None:
        entry = self.live.get(session_id)
        if entry is None or session_id in self.activating:
            return None
        try:
            if not await entry.actor.passivate.remote(min_idle_s):
                return None
        except ray.exceptions.RayActorError:
            self.live.pop(session_id, None)
            return None
        self.live.pop(session_id, None)
        self.counters["passivations"] += 1
        return entry.actor

    def _recycle(self, actor: ActorHandle) -> None:
        if len(self.pool) < self.settings.warm_pool_size:
            self.pool.append(actor)
        else:
            ray.kill(actor)

    # background upkeep

    async def _refill(self) -> None:
        while True:
            try:
                while len(self.pool) + self.creating < self.settings.warm_pool_size:
                    self.pool.append(await self._create())
                    await self._notify()
            except Exception:
                log.exception("warm pool refill failed")
            await asyncio.sleep(0.5)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.settings.idle_ttl_s / 4))
            with contextlib.suppress(Exception):
                await self.passivate_idle(self.settings.idle_ttl_s)

    async def _notify(self) -> None:
        async with self.freed:
            self.freed.notify_all()

    async def passivate_idle(self, min_idle_s: float) -> list[str]:
        """Passivate every live session idle for ``min_idle_s``; returns their ids."""
        done = []
        for session_id in list(self.live):
            actor = await self._passivate(session_id, min_idle_s)
            if actor is not None:
                self._recycle(actor)
                done.append(session_id)
        if done:
            await self._notify()
        return done

    async def forget(self, session_id: str, actor: ActorHandle) -> None:
        """The ingress found this actor dead: the next activation starts afresh from the store."""
        entry = self.live.get(session_id)
        if entry is not None and entry.actor == actor:
            del self.live[session_id]

    # providers

    def list_providers(self) -> list[ProviderConfig]:
        return list(self.providers.values())

    def add_provider(self, config: ProviderConfig) -> None:
        self.providers[config.provider_id] = config

    def stats(self) -> dict[str, Any]:
        return {
            "live": len(self.live),
            "pooled": len(self.pool),
            "creating": self.creating,
            "live_cap": self.cap,
            "warm_pool_size": self.settings.warm_pool_size,
            "idle_ttl_s": self.settings.idle_ttl_s,
            "stored": self.store.count_sessions(),
            "passivated": self.store.count_sessions() - len(self.live),
            **self.counters,
        }
