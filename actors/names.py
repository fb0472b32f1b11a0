"""Serve names shared by the actors; a module of its own so session actors import no provider SDK."""

from __future__ import annotations

__all__ = ["pool_name", "registered_app_name"]


def pool_name(provider_id: str) -> str:
    return f"pool-{provider_id}"


def registered_app_name(provider_id: str) -> str:
    return f"relay-provider-{provider_id}"
