"""What the ingress adds to a turn beyond its provider: a route's pools, server-side tools, the cache policy.

The session does the work (``relay.session.steps``); the ingress only decides, before
any upstream call, so that bad input is a 400 naming the field: an unknown
tool, a tool name that clashes with one of the client's own, a pool that lacks
a feature. A turn's tools are the request's ``relay_tools``, else its session's
``session_data.relay_tools``, else the server's ``tools.enabled``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from relay.config import ProviderConfig, RelaySettings, RouteConfig
from relay.errors import InvalidRequest
from relay.request import ChatRequest, RoutePlan, Target
from relay.session.balancer import route_health
from relay.session.cache import CachePolicy, cacheable
from relay.store import Store
from relay.tools import ToolRegistry

__all__ = ["CACHE_HEADER", "RunPlanner"]

CACHE_HEADER = "X-Relay-Cache"
Resolve = Callable[[str | None, str | None], Awaitable[tuple[ProviderConfig, str]]]


class RunPlanner:
    def __init__(self, settings: RelaySettings, store: Store) -> None:
        self.store = store
        self.tools = ToolRegistry(settings.tools)
        self.routes = {route.name: route for route in settings.routes}

    def route(self, model: str | None, provider_id: str | None) -> RouteConfig | None:
        return self.routes.get(provider_id or model or "")

    async def route_plan(self, route: RouteConfig, resolve: Resolve) -> tuple[RoutePlan, list[ProviderConfig]]:
        """The route's pools resolved to targets (first = the nominal provider), and their configs."""
        targets, configs = [], []
        for pool in route.pools:
            provider, model = await resolve(pool.model, pool.provider)
            targets.append(Target(provider.provider_id, model, provider.pool_app))
            configs.append(provider)
        weights = tuple(pool.weight for pool in route.pools)
        return RoutePlan(route.name, route.strategy, tuple(targets), weights, route.explore), configs

    def apply_cache(self, chat: ChatRequest, route: RouteConfig) -> None:
        """On a cached route, a request without a temperature gets the route's default, and a deterministic one
        is looked up."""
        settings = route.cache
        if settings is None:
            return
        if chat.params.get("temperature") is None and settings.default_temperature is not None:
            chat.params["temperature"] = settings.default_temperature
        if cacheable(chat.params):
            chat.cache = CachePolicy.of(route.name, settings)

    async def enable_tools(
        self, chat: ChatRequest, names: list[str] | None, session_id: str | None, user_id: str | None
    ) -> None:
        """Attach the turn's tool set and add its schemas to the tools the model sees."""
        param = "relay_tools"
        if names is None and session_id and user_id:
            session = await self.store.offload(self.store.get_session, session_id)
            stored = (session.get("session_data") or {}).get("relay_tools") if session else None
            if session and session["user_id"] == user_id and stored is not None:
                if not isinstance(stored, list) or not all(isinstance(name, str) for name in stored):
                    raise InvalidRequest(
                        "The session's session_data.relay_tools must be a list of tool names",
                        param="session_data.relay_tools",
                    )
                names, param = stored, "session_data.relay_tools"
        toolset = self.tools.select(names, param)
        if toolset is None:
            return
        own = chat.params.get("tools") or []
        for i, entry in enumerate(own):
            name = (entry.get("function") or {}).get("name") if isinstance(entry, dict) else None
            if name in toolset:
                raise InvalidRequest(
                    f"The tool '{name}' is both the client's and a server-side tool; rename yours", param=f"tools[{i}]"
                )
        chat.params["tools"] = [*own, *toolset.schemas()]
        chat.tools = toolset

    def cache_header(self, chat: ChatRequest, first: list[dict[str, Any]]) -> dict[str, str]:
        """``X-Relay-Cache`` on a cached route: ``hit``, ``miss``, or ``bypass`` for a request it may not cache."""
        route = self.routes.get(chat.route.name) if chat.route is not None else None
        if route is None or route.cache is None:
            return {}
        if any(event["type"] == "cache-hit" for event in first):
            return {CACHE_HEADER: "hit"}
        return {CACHE_HEADER: "miss" if chat.cache is not None else "bypass"}

    def health(self, pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return route_health(list(self.routes.values()), pools)
