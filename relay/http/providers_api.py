"""Providers at runtime: register, list (never a key), delete, ``health_check_all``, and the server's stats."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relay.config import ProviderConfig
from relay.errors import Conflict, RelayError
from relay.http.gateway import Gateway
from relay.http.io import read_json
from relay.http.schemas import RegisterProviderBody, parse_body, validation_error
from relay.providers.features import features_for, known_type

__all__ = ["provider_routes", "public_provider"]


def public_provider(config: ProviderConfig, configured: set[str]) -> dict[str, Any]:
    """What callers may see of a provider: never its key, only the variable that holds one."""
    try:
        features = sorted(features_for(config))
    except RelayError:
        features = []
    return {
        "provider_id": config.provider_id,
        "provider_type": config.provider_type,
        "model": config.default_model,
        "models": config.models,
        "base_url": config.base_url,
        "api_key_env": config.api_key_env,
        "fallbacks": config.fallbacks,
        "features": features,
        "num_replicas": config.num_replicas,
        "registered": config.provider_id not in configured,
    }


def provider_routes(gateway: Gateway) -> list[Route]:
    backend = gateway.backend

    async def register(request: Request) -> Response:
        gateway.require_admin(request)
        body = parse_body(RegisterProviderBody, await read_json(request))
        try:
            config = body.to_config()
        except ValidationError as exc:
            raise validation_error(exc) from None
        if any(p.provider_id == config.provider_id for p in await backend.providers(refresh=True)):
            raise Conflict(f"Provider '{config.provider_id}' is already registered", param="provider_id")
        known_type(config)
        await backend.register_provider(config)
        return JSONResponse(public_provider(config, gateway.configured) | {"status": "registered"}, status_code=201)

    async def list_providers(request: Request) -> Response:
        providers = await backend.providers(refresh=True)
        return JSONResponse({"object": "list", "data": [public_provider(p, gateway.configured) for p in providers]})

    async def delete(request: Request) -> Response:
        gateway.require_admin(request)
        provider_id = request.path_params["provider_id"]
        await backend.unregister_provider(provider_id)
        return JSONResponse({"provider_id": provider_id, "status": "deleted"})

    async def health(request: Request) -> Response:
        gateway.require_admin(request)
        pools = await backend.provider_health()
        status = {"status": "ok" if all(p["ok"] for p in pools) else "degraded", "providers": pools}
        return JSONResponse(status | ({"routes": gateway.planner.health(pools)} if gateway.planner.routes else {}))

    async def stats(request: Request) -> Response:
        """The seed's ``get_system_stats``: sessions, actors, pools, WebSocket connections."""
        gateway.require_admin(request)
        numbers = await backend.stats()
        numbers |= {name: read() for name, read in gateway.stats.items()}
        return JSONResponse(numbers)

    return [
        Route("/api/streaming/providers", list_providers, methods=["GET"]),
        Route("/api/streaming/providers/register", register, methods=["POST"]),
        Route("/api/streaming/providers/health", health, methods=["GET"]),
        Route("/api/streaming/providers/{provider_id}", delete, methods=["DELETE"]),
        Route("/api/stats", stats, methods=["GET"]),
    ]
