"""Load-balanced routes: one name (``gpt-4o``) over several pools, picked by a strategy.

A pool is a configured provider (another key, region or vendor) with a
weight. The strategies are pure functions over what the pools report:

- ``weighted``: smooth weighted round robin (nginx's), so that a 3:1 route
  sends exactly 3 of every 4 requests to the first pool, with no bursts;
- ``least-busy``: fewest streams in flight per unit of weight;
- ``latency``: lowest moving average of time to first token; pools not yet
  measured go first, and ``explore`` of the requests still go by weight so a
  pool that was slow once gets measured again.

Load and latency come from the pools' own counters (``ProviderRuntime.stats``:
``in_flight``, ``ttft_ewma_ms``, ``breaker``), read by each process's ``Balancer``
at most once per ``stats_ttl_s``. Between two reads the router adds the streams
its own process opened or closed since, so a burst does not pile onto one pool
while the numbers are stale. A pool whose circuit breaker is open goes last.

The chosen pool is tried first and the route's other pools become the head of
the fallback chain, ranked by the same strategy: a pool that fails before its
first token hands the request to the next (``relay.providers.resilience.with_fallback``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from relay.config import RouteConfig
from relay.request import ChatRequest, RoutePlan, Target
from relay.types import Batches, StreamOpener

__all__ = [
    "STRATEGIES",
    "PoolView",
    "Balancer",
    "rank",
    "route_health",
    "smooth_weighted",
]

STRATEGIES: tuple[str, ...] = ("weighted", "least-busy", "latency")
PoolStats = Callable[[Target], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class PoolView:
    """What a strategy knows of one pool."""

    load: float = 0.0
    ttft_ms: float | None = None
    open: bool = False


def smooth_weighted(current: list[float], weights: Sequence[float], among: Sequence[int]) -> int:
    """nginx's smooth weighted round robin over the pools ``among``; ``current`` is the route's running state."""
    total = sum(weights[i] for i in among)
    for i in among:
        current[i] += weights[i]
    best = max(among, key=lambda i: current[i])
    current[best] -= total
    return best


def rank(
    strategy: str,
    weights: Sequence[float],
    views: Sequence[PoolView],
    current: list[float],
    rng: random.Random,
    explore: float = 0.0,
) -> list[int]:
    """Pool indices, best first: the first serves, the rest are its fallbacks. Open breakers go last."""
    everyone = range(len(weights))
    healthy = [i for i in everyone if not views[i].open] or list(everyone)
    shut = [i for i in everyone if i not in healthy]
    if strategy == "least-busy":
        busy = {i: views[i].load / weights[i] for i in healthy}
        least = min(busy.values())
        first = smooth_weighted(current, weights, [i for i in healthy if busy[i] == least])
        rest = sorted((i for i in healthy if i != first), key=lambda i: busy[i])
    elif strategy == "latency":
        unmeasured = [i for i in healthy if views[i].ttft_ms is None]
        if unmeasured:
            first = smooth_weighted(current, weights, unmeasured)
        elif rng.random() < explore:
            first = smooth_weighted(current, weights, healthy)
        else:
            fastest = min(views[i].ttft_ms or 0.0 for i in healthy)
            first = smooth_weighted(current, weights, [i for i in healthy if views[i].ttft_ms == fastest])
        rest = sorted((i for i in healthy if i != first), key=lambda i: (views[i].ttft_ms is None, views[i].ttft_ms))
    else:
        first = smooth_weighted(current, weights, healthy)
        rest = sorted((i for i in healthy if i != first), key=lambda i: -weights[i])
    return [first, *rest, *shut]


class Balancer:
    """One per process (a session actor, the in-process backend): its counts are the process's own streams."""

    def __init__(
        self,
        stats: PoolStats | None = None,
        *,
        stats_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._stats = stats
        self.stats_ttl_s = stats_ttl_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.local: Counter[str] = Counter()  # streams this process has open, per pool
        self._read: dict[str, tuple[float, dict[str, Any] | None, int]] = {}  # pool: (read at, stats, local then)
        self._rotation: dict[str, list[float]] = {}

    async def _pool_stats(self, target: Target) -> tuple[float, dict[str, Any] | None, int]:
        read = self._read.get(target.provider)
        if read is None or self.clock() - read[0] >= self.stats_ttl_s:
            local_then = self.local[target.provider]
            stats = await self._stats(target) if self._stats is not None else None
            read = self._read[target.provider] = (self.clock(), stats, local_then)
        return read

    def _view(self, target: Target, read: tuple[float, dict[str, Any] | None, int]) -> PoolView:
        _, stats, local_then = read
        local = self.local[target.provider]
        if not stats:
            return PoolView(load=local)
        remote = stats.get("in_flight") or 0
        return PoolView(
            load=max(remote + local - local_then, local),
            ttft_ms=stats.get("ttft_ewma_ms"),
            open=stats.get("breaker") == "open",
        )

    async def order(self, plan: RoutePlan) -> list[Target]:
        reads = await asyncio.gather(*(self._pool_stats(target) for target in plan.pools))
        # from here to the caller's first stream nothing awaits: no other turn can pick on the same counts
        views = [self._view(target, read) for target, read in zip(plan.pools, reads, strict=True)]
        current = self._rotation.get(plan.name) or self._start_rotation(plan)
        return [plan.pools[i] for i in rank(plan.strategy, plan.weights, views, current, self.rng, plan.explore)]

    def _start_rotation(self, plan: RoutePlan) -> list[float]:
        """The route's round robin, started at a random point of its cycle: processes that start together (session
        actors, replicas) do not all send their first request to the same pool."""
        current = [0.0] * len(plan.pools)
        everyone = range(len(plan.pools))
        for _ in range(self.rng.randrange(max(1, min(1000, round(sum(plan.weights)))))):
            smooth_weighted(current, plan.weights, everyone)
        self._rotation[plan.name] = current
        return current

    async def plan(self, request: ChatRequest) -> ChatRequest:
        """``request`` aimed at the route's best pool, the other pools first in its fallback chain."""
        assert request.route is not None
        first, *rest = await self.order(request.route)
        return replace(
            request,
            provider=first.provider,
            model=first.model,
            pool_app=first.pool_app,
            fallbacks=[*rest, *request.fallbacks],
            route=None,
        )

    def tracked(self, open_stream: StreamOpener) -> StreamOpener:
        """``open_stream``, counting this process's open streams per pool while they run."""

        async def opener(request: ChatRequest) -> Batches:
            self.local[request.provider] += 1
            try:
                async for batch in open_stream(request):
                    yield batch
            finally:
                self.local[request.provider] -= 1

        return opener


def route_health(routes: Sequence[RouteConfig], pools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each route's pools with their configured and observed share of requests (from the pools' counters)."""
    by_id = {pool.get("provider_id"): pool for pool in pools}
    out = []
    for route in routes:
        total_weight = sum(pool.weight for pool in route.pools)
        counts = [(by_id.get(pool.provider) or {}).get("requests") or 0 for pool in route.pools]
        served = sum(counts)
        entries = []
        for pool, count in zip(route.pools, counts, strict=True):
            health = by_id.get(pool.provider) or {}
            breaker = health.get("breaker")  # a pool's health has the breaker's snapshot, its stats only the state
            entries.append(
                {
                    "provider": pool.provider,
                    "model": pool.model,
                    "weight": pool.weight,
                    "configured_share": round(pool.weight / total_weight, 4),
                    "requests": count,
                    "share": round(count / served, 4) if served else None,
                    "in_flight": health.get("in_flight"),
                    "ttft_ewma_ms": health.get("ttft_ewma_ms"),
                    "breaker": breaker.get("state") if isinstance(breaker, dict) else breaker,
                }
            )
        out.append(
            {"name": route.name, "strategy": route.strategy, "cached": route.cache is not None, "pools": entries}
        )
    return out
