"""Relay: a Ray-native LLM chat runtime.

What a user imports lives here: the clients, the event models and their
constructors, the error hierarchy, the adapter base with its registry, the
tool decorator and ``register_mode``. Every name is loaded on first use
(PEP 562 ``__getattr__``): ``import relay.errors`` inside a pool replica, or
in a client that only talks HTTP, pays for no client, SDK or server module,
and no ``relay`` import ever loads Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relay.client import AsyncClient, Client
    from relay.errors import (
        AuthenticationFailed,
        BudgetExceeded,
        Conflict,
        InvalidRequest,
        NotFound,
        Overloaded,
        PayloadTooLarge,
        PermissionDenied,
        ProviderError,
        ProviderTimeout,
        RateLimited,
        RelayError,
        Unprocessable,
        UnsupportedFeature,
        UnsupportedMediaType,
        as_relay_error,
        error_for_status,
        from_event,
    )
    from relay.events import (
        CacheHit,
        CitationEvent,
        ErrorEvent,
        Event,
        FinishEvent,
        ReasoningDelta,
        StatusEvent,
        TextDelta,
        ToolCallDelta,
        ToolCallEnd,
        ToolCallStart,
        ToolExecutionEnd,
        ToolExecutionStart,
        UsageEvent,
        WarningEvent,
        cache_hit,
        error_event,
        finish,
        reasoning_delta,
        status,
        text_delta,
        tool_execution_end,
        tool_execution_start,
        usage,
    )
    from relay.modes import register_mode
    from relay.providers import BaseProviderAdapter, register_adapter
    from relay.tools import tool

__all__ = [
    "__version__",
    "as_relay_error",
    "AsyncClient",
    "AuthenticationFailed",
    "BudgetExceeded",
    "BaseProviderAdapter",
    "cache_hit",
    "CacheHit",
    "CitationEvent",
    "Client",
    "Conflict",
    "error_event",
    "error_for_status",
    "ErrorEvent",
    "Event",
    "finish",
    "FinishEvent",
    "from_event",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "reasoning_delta",
    "ReasoningDelta",
    "register_adapter",
    "register_mode",
    "RelayError",
    "status",
    "StatusEvent",
    "text_delta",
    "TextDelta",
    "tool",
    "tool_execution_end",
    "tool_execution_start",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "ToolExecutionEnd",
    "ToolExecutionStart",
    "Unprocessable",
    "UnsupportedFeature",
    "UnsupportedMediaType",
    "usage",
    "UsageEvent",
    "WarningEvent",
]

# Where each name lives: imported from there on first use.
_HOMES: dict[str, tuple[str, ...]] = {
    "relay.client": ("AsyncClient", "Client"),
    "relay.errors": (
        "AuthenticationFailed",
        "BudgetExceeded",
        "Conflict",
        "InvalidRequest",
        "NotFound",
        "Overloaded",
        "PayloadTooLarge",
        "PermissionDenied",
        "ProviderError",
        "ProviderTimeout",
        "RateLimited",
        "RelayError",
        "Unprocessable",
        "UnsupportedFeature",
        "UnsupportedMediaType",
        "as_relay_error",
        "error_for_status",
        "from_event",
    ),
    "relay.events": (
        "CacheHit",
        "CitationEvent",
        "ErrorEvent",
        "Event",
        "FinishEvent",
        "ReasoningDelta",
        "StatusEvent",
        "TextDelta",
        "ToolCallDelta",
        "ToolCallEnd",
        "ToolCallStart",
        "ToolExecutionEnd",
        "ToolExecutionStart",
        "UsageEvent",
        "WarningEvent",
        "cache_hit",
        "error_event",
        "finish",
        "reasoning_delta",
        "status",
        "text_delta",
        "tool_execution_end",
        "tool_execution_start",
        "usage",
    ),
    "relay.modes": ("register_mode",),
    "relay.providers": ("BaseProviderAdapter", "register_adapter"),
    "relay.tools": ("tool",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _HOME_OF:
        value = getattr(importlib.import_module(_HOME_OF[name]), name)
    else:
        raise AttributeError(f"module 'relay' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute: no second lookup
    return value


def _version() -> str:
    # importlib.metadata costs ~60 modules: read only when asked, not on every ``import relay.errors``
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relay")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
