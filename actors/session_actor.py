"""``SessionActor``: a live session's history and state, recycled through a warm pool.

An actor hosts one session while live sessions fit under the actor cap; under
overload the directory co-hosts more sessions on one actor (as Orleans packs
grains into a silo) instead of queueing them behind a process start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray

from relay.config import ContextSettings
from relay.logs import configure_logging, set_request_id
from relay.request import ChatRequest, Target
from relay.session.balancer import Balancer
from relay.session.runlog import RunNotLive
from relay.session.session import Session
from relay.spend import PriceTable
from relay.store import Store, open_store
from relay.types import Batches

from .metrics import spend_metrics
from .pools import PoolHandles

__all__ = ["SessionActor", "SessionMoved"]

log = logging.getLogger("relay.session_actor")


class SessionMoved(Exception):
    """The actor no longer hosts this session (it was passivated); activate it again."""


@ray.remote(num_cpus=0)
class SessionActor:
    def __init__(self, store_url: str, context: ContextSettings, prices: str | None = None) -> None:
        """``prices``: the settings' price table path (None: the one Relay ships), read once per process."""
        configure_logging()
        self.store: Store = open_store(store_url)
        self.context = context
        self.prices = PriceTable.load(prices)
        self.sessions: dict[str, Session] = {}
        # kept across recycles: each handle's router warms up once per process
        self.pool_handles = PoolHandles()
        # One per process, shared by its sessions; it reads the pools' counters at most once a second.
        self.balancer = Balancer(self._pool_stats, stats_ttl_s=1.0)
        # Placements (SessionDirectory.place) passivated before their first chat came: that chat must not activate.
        self.retired: dict[str, int] = {}

    async def activate(self, session_id: str, user_id: str, new: bool = False) -> None:
        """``new``: the directory just created the session, so there is no run to interrupt and no history to read.

        The store's reads and writes are awaited off the loop: the sessions this actor already hosts keep streaming.
        The directory activates a session once and sends no turn before this returns, so nothing interleaves here.
        """
        self.retired.pop(session_id, None)
        session = Session(
            self.store, session_id, user_id, self.context, self.balancer, self.prices, spend_metrics().record
        )
        if not new:
            await self.store.offload(self.store.interrupt_running, session_id)
            await session.restore()
        self.sessions[session_id] = session

    async def chat(self, session_id: str, request: ChatRequest, activation: tuple[str, int] | None = None) -> Batches:
        """``activation``: (user, epoch) of a brand-new session the directory placed here without activating it.

        It activates the session unless its epoch was retired (the placement was passivated before this chat came):
        a stale placement never activates a session a second time.
        """
        session = self.sessions.get(session_id)
        if session is None:
            if activation is None or activation[1] <= self.retired.get(session_id, 0):
                raise SessionMoved(session_id)
            await self.activate(session_id, activation[0], new=True)
            session = self.sessions[session_id]
        set_request_id(request.request_id)  # this call's own context: its log lines carry the ingress's id
        async for batch in session.chat(request, self._open_stream):
            yield batch

    async def tail(self, session_id: str, run_id: str, after: int) -> Batches:
        session = self.sessions.get(session_id)
        if session is None:
            raise RunNotLive(run_id)
        async for batch in session.tail(run_id, after):
            yield batch

    async def warm(self, pool_app: str | None, provider: str) -> None:
        """Let this process's router learn a pool's replicas now: a fresh actor's first turn waits ~0.3 s for it.

        Best effort, and nobody waits for it: a pool that is down fails the turns that use it, not this.
        """
        try:
            await asyncio.wait_for(self.pool_handles.stats(pool_app, provider), timeout=30.0)
        except Exception:
            log.warning("warming the handle to pool %s failed", provider, exc_info=True)

    async def _pool_stats(self, target: Target) -> dict[str, Any] | None:
        """A provider's counters (in flight, moving TTFT, breaker) for routing; None when its pool is slow to answer.

        On the shared pool these are that provider's own, never the replica's total.
        """
        try:
            return await asyncio.wait_for(self.pool_handles.stats(target.pool_app, target.provider), timeout=2.0)
        except Exception:
            log.warning("pool %s did not report its counters; routing goes without them", target.provider)
            return None

    def _open_stream(self, request: ChatRequest) -> Batches:
        return self.pool_handles.stream(request.pool_app, request)

    def idle_ages(self) -> dict[str, float]:
        """Seconds since each hosted session's last run: the directory's least-recently-used order."""
        now = time.monotonic()
        return {session_id: now - session.last_active for session_id, session in self.sessions.items()}

    def cancel(self, session_id: str, run_id: str) -> bool:
        session = self.sessions.get(session_id)
        return session is not None and session.cancel(run_id)

    def passivate(self, session_id: str, min_idle_s: float, epoch: int = 0) -> bool:
        """Drop the session if no turn runs or waits and it was idle long enough; it is all stored.

        ``epoch``: the directory's placement of the session here; if its first chat has not come, it never will.
        """
        session = self.sessions.get(session_id)
        if session is None:
            if epoch:
                self.retired[session_id] = epoch
            return True
        if session.busy or time.monotonic() - session.last_active < min_idle_s:
            return False
        del self.sessions[session_id]
        return True

    def pools(self) -> list[str]:
        """The pools this process holds a handle to (warmed or used)."""
        return self.pool_handles.names()

    def hosted(self) -> list[str]:
        return list(self.sessions)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()
