"""Provider adapters, one module per wire format, and the table that names them by provider_type.

An adapter class is found by ``provider_type``: the built-ins below, classes
added with ``register_adapter``, and the ``relay.providers`` entry point group
of installed packages. A provider config may instead name its class directly
(``adapter: "package.module:Class"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from relay.config import ProviderConfig
from relay.errors import InvalidRequest
from relay.providers.base import BaseProviderAdapter

__all__ = [
    "ADAPTERS",
    "ENTRY_POINT_GROUP",
    "BaseProviderAdapter",
    "adapter_class",
    "register_adapter",
]

ENTRY_POINT_GROUP = "relay.providers"
# Imported on first use: a pool replica loads only its own SDK (the anthropic package alone takes ~2.5 s).
ADAPTERS: dict[str, type[BaseProviderAdapter] | str] = {
    "echo": "relay.providers.echo:EchoAdapter",
    "openai": "relay.providers.openai:OpenAIAdapter",
    "azure": "relay.providers.azure:AzureOpenAIAdapter",
    "openai_compatible": "relay.providers.openai_compatible:OpenAICompatibleAdapter",
    "anthropic": "relay.providers.anthropic:AnthropicAdapter",
}


def register_adapter(cls: type[BaseProviderAdapter]) -> type[BaseProviderAdapter]:
    """Make a custom adapter available under its ``provider_type`` (usable as a class decorator)."""
    ADAPTERS[cls.provider_type] = cls
    return cls


def _load(target: str, param: str) -> type[BaseProviderAdapter]:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidRequest(f"Cannot load adapter {target!r}: {exc}", param=param) from None
    if not (isinstance(cls, type) and issubclass(cls, BaseProviderAdapter)):
        raise InvalidRequest(f"{target!r} is not a BaseProviderAdapter subclass", param=param)
    return cls


def adapter_class(config: ProviderConfig) -> type[BaseProviderAdapter]:
    if config.adapter:
        return _load(config.adapter, "adapter")
    if config.provider_type in ADAPTERS:
        known = ADAPTERS[config.provider_type]
        if isinstance(known, str):
            known = ADAPTERS[config.provider_type] = _load(known, "provider_type")
        return known
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=config.provider_type):
        return _load(entry.value, "provider_type")
    raise InvalidRequest(
        f"Provider '{config.provider_id}': unknown provider_type '{config.provider_type}'; "
        f"built in: {', '.join(sorted(ADAPTERS))}, or install a '{ENTRY_POINT_GROUP}' entry point",
        param="provider_type",
    )
