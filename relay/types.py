"""The stream types every stage shares: an event batch is the unit that crosses a Ray hop or a socket write."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from relay.request import ChatRequest

__all__ = ["Event", "Batch", "Batches", "StreamOpener"]

Event: TypeAlias = dict[str, Any]
Batch: TypeAlias = list[Event]
Batches: TypeAlias = AsyncIterator[Batch]
# Opens a request's stream on a provider: a pool's handle on Ray, a runtime in-process, a fake in unit tests.
StreamOpener: TypeAlias = "Callable[[ChatRequest], Batches]"
