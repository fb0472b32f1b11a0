"""Server-side tools that misbehave on purpose, registered through config (``tools.functions``) in tests."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import Field

from relay.tools import tool

__all__ = ["explode", "flood", "lookup", "stall", "units", "wait_forever"]


def explode(reason: str) -> str:
    """Raise an error with ``reason`` as its message."""
    raise RuntimeError(reason)


@tool(timeout_s=0.3)
async def stall() -> str:
    """Never answer: awaits an event nobody sets, so only its timeout ends it."""
    await asyncio.Event().wait()
    return "unreachable"


def flood(size: int = 1_000_000) -> str:
    """Return ``size`` characters: 1 MB by default, far over any output cap."""
    return "x" * size


@tool(name="forever", timeout_s=120)
async def wait_forever() -> str:
    """Wait until the run is cancelled."""
    await asyncio.Event().wait()
    return "unreachable"


def lookup(key: str, limit: Annotated[int, Field(ge=1, le=10)] = 3) -> dict[str, object]:
    """Look up a key.

    :param key: What to look up.
    :param limit: How many results, 1 to 10.
    """
    return {"key": key, "results": [f"{key}-{i}" for i in range(limit)]}


def units(value: float, unit: Literal["km", "mi"] = "km") -> float:
    """Convert a distance to metres.

    Args:
        value: The distance.
        unit: Its unit: kilometres or miles.
    """
    return value * (1000.0 if unit == "km" else 1609.344)

