"""``relay``'s public names, locked: adding or dropping one is a deliberate change to this list."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import version

import pytest

import relay

PUBLIC: dict[str, set[str]] = {
    "relay.client": {"AsyncClient", "Client"},
    "relay.errors": {
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
    },
    "relay.events": {
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
    },
    "relay.modes": {"register_mode"},
    "relay.providers": {"BaseProviderAdapter", "register_adapter"},
    "relay.tools": {"tool"},
}
HOME = {name: module for module, names in PUBLIC.items() for name in names}


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(relay.__all__) == sorted(["__version__", *HOME])


def test_every_error_and_event_of_their_modules_is_public() -> None:
    import relay.errors

    assert set(relay.errors.__all__) == PUBLIC["relay.errors"]


@pytest.mark.parametrize("name", sorted(HOME))
def test_each_name_is_its_home_module_s_object(name: str) -> None:
    assert getattr(relay, name) is getattr(importlib.import_module(HOME[name]), name)
    assert name in dir(relay)


def test_the_version_is_the_installed_distribution_s() -> None:
    assert relay.__version__ == version("relay")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        relay.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "code",
    [
        "import relay",
        "import relay.client",
        "import relay.events",
        "import relay.errors",
        "import relay; [getattr(relay, name) for name in relay.__all__]",
    ],
)
def test_importing_the_public_surface_loads_no_ray(code: str) -> None:
    """A client program, or a pool replica, that imports relay must not pay for Ray (seconds, hundreds of modules)."""
    probe = f"{code}; import sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
