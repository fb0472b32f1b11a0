"""Budgets on the cluster: two ingress-side clients share the ONE limiter actor; runs are costed in session actors."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
import pytest
import ray

from actors.limiter import RemoteUserLimits
from relay.config import LimitSettings
from relay.spend import Budget
from tests.integration.conftest import Relay
from tests.waiting import await_until

pytestmark = pytest.mark.integration


async def test_two_replicas_clients_share_one_ledger_and_overshoot_by_nothing(relay: Relay) -> None:
    name = f"relay-limiter-budgets-{uuid.uuid4().hex[:8]}"
    settings = LimitSettings(limiter_timeout_s=60)  # no per-user limit: the actor exists for the budget alone
    replicas = [RemoteUserLimits(settings, name), RemoteUserLimits(settings, name)]
    budget = Budget("key", "key_shared", 100.0, "day")
    admitted: list[str] = []

    async def turn(client: RemoteUserLimits) -> None:
        decision = await client.reserve_budget([budget], 17.0)  # a $17 worst case that costs $6
        if decision.reservation is not None:
            admitted.append(decision.reservation)
            client.settle_budget(decision.reservation, 6.0, [budget])

    try:
        await asyncio.gather(*(turn(client) for client in replicas * 25))
        expected = 100.0 - 6.0 * len(admitted)
        # settles are fire-and-forget: asked until every one has replaced its hold (a probe holds nothing)
        probe = await await_until(
            lambda: replicas[0].reserve_budget([budget], 0.0),
            timeout_s=60,
            what="every settle to reach the actor",
            done=lambda decision: decision.remaining_usd == pytest.approx(expected),
        )
        spent = 100.0 - (probe.remaining_usd or 0.0)
        overshoot = max(0.0, spent - 100.0)
        print(f"2 RemoteUserLimits clients, 50 concurrent, budget $100: {len(admitted)} admitted, ${spent:.2f} spent")
        assert spent == pytest.approx(6.0 * len(admitted)) and overshoot == 0.0 and len(admitted) >= 5
        refused = await replicas[1].reserve_budget([budget], 100.0 - spent + 0.01)
        assert refused.reservation is None and "key key_shared budget of $100.00 per day" in (refused.message or "")
    finally:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name))


async def test_a_run_on_the_cluster_records_its_cost_and_spend_sums_it(relay: Relay) -> None:
    user = f"spender-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=relay.url, headers={"X-User-Id": user}, timeout=60) as http:
        body = {"provider_id": "echo", "messages": [{"role": "user", "content": "hi there"}], "stream_format": "json"}
        reply = await http.post("/api/streaming/chat", json=body)
        assert reply.status_code == 200
        spend = (await http.get("/api/spend", params={"user_id": user, "group_by": "provider"})).json()
    # echo is priced at $0 in config/prices.yaml: a known zero, not unpriced, so the session actor loaded the table
    assert spend["data"] == [
        {
            "provider": "echo",
            "cost_usd": 0.0,
            "runs": 1,
            "unpriced_runs": 0,
            "tokens": {"input": 2, "cached_input": 0, "cache_write": 0, "output": 2, "reasoning": 0},
        }
    ]


async def test_a_user_under_no_limit_never_calls_the_limiter_actor(relay: Relay) -> None:
    name = f"relay-limiter-some-{uuid.uuid4().hex[:8]}"
    settings = LimitSettings.model_validate({"users": {"batch": {"concurrent_streams": 1}}, "limiter_timeout_s": 60})
    client = RemoteUserLimits(settings, name)
    assert (await client.acquire("ann")).lease == ""  # let through without a call: no actor was even looked up
    assert client._actor is None
    with pytest.raises(ValueError):
        ray.get_actor(name)
    lease = (await client.acquire("batch")).raise_if_refused()
    assert lease and client._actor is not None
    assert (await client.acquire("batch")).lease is None  # the limit that applies is held by the actor
    client.release(lease, 0)
    with contextlib.suppress(Exception):
        ray.kill(ray.get_actor(name))
