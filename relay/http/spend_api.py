"""``GET /api/spend`` (what runs cost, grouped) and ``PATCH /api/keys/{key_id}`` (a key's budget).

An admin reads everyone's spend (``user_id`` narrows it); any other key reads
only its own user's, whatever it asks: the filter is the key's, not the
query's. On an open loopback server the local caller is the admin.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.config import BudgetPeriod
from relay.errors import NotFound
from relay.http.auth import identity_of
from relay.http.gateway import Gateway
from relay.http.io import read_json
from relay.http.schemas import parse_body
from relay.spend.report import parse_when, spend_report

__all__ = ["KeyBudgetBody", "spend_routes"]

# Far enough ahead for any run stored now: a report without ``to`` ends there.
_END_OF_TIME = 4102444800.0  # 2100-01-01


class KeyBudgetBody(BaseModel):
    """A key's budget: ``budget_usd`` null lifts it."""

    model_config = ConfigDict(extra="forbid")
    budget_usd: float | None = Field(gt=0, le=1_000_000_000)
    budget_period: BudgetPeriod = "month"


def spend_routes(gateway: Gateway) -> list[Route]:
    store = gateway.backend.store

    async def spend(request: Request) -> Response:
        identity = identity_of(request)
        query = request.query_params
        if identity is None or identity.is_admin:
            gateway.require_admin(request)
            user_id = query.get("user_id") or None
        else:
            user_id = identity.user_id
        since = parse_when(query.get("from"), "from", 0.0)
        until = parse_when(query.get("to"), "to", _END_OF_TIME)
        group_by = query.get("group_by") or "user"
        report = spend_report(await store.offload(store.run_costs, since, until, user_id), group_by)
        body: dict[str, Any] = {"object": "spend", "from": since, "to": until, "group_by": group_by}
        return JSONResponse(body | ({"user_id": user_id} if user_id else {}) | report)

    async def set_key_budget(request: Request) -> Response:
        gateway.require_admin(request)
        key_id = request.path_params["key_id"]
        body = parse_body(KeyBudgetBody, await read_json(request))
        if not await store.offload(store.set_api_key_budget, key_id, body.budget_usd, body.budget_period):
            raise NotFound(f"API key '{key_id}' not found (or revoked)", param="key_id")
        row = (await store.offload(store.api_keys, key_id=key_id))[0]
        return JSONResponse({key: row[key] for key in ("key_id", "user_id", "name", "budget_usd", "budget_period")})

    return [
        Route("/api/spend", spend, methods=["GET"]),
        Route("/api/keys/{key_id}", set_key_budget, methods=["PATCH"]),
    ]
