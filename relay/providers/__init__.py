"""Provider adapters, one module per wire format, and the registry that names them."""

from __future__ import annotations

from ..config import ProviderConfig
from ..errors import UnsupportedFeature
from .base import BaseProviderAdapter, request_features
from .echo import EchoAdapter
from .openai import OpenAIAdapter, OpenAICompatibleAdapter

__all__ = ["ADAPTERS", "BaseProviderAdapter", "create_adapter", "request_features"]

ADAPTERS: dict[str, type[BaseProviderAdapter]] = {
    "echo": EchoAdapter,
    "openai": OpenAIAdapter,
    "openai_compatible": OpenAICompatibleAdapter,
}


def create_adapter(config: ProviderConfig) -> BaseProviderAdapter:
    try:
        cls = ADAPTERS[config.provider_type]
    except KeyError:
        raise UnsupportedFeature(
            f"Provider '{config.provider_id}': no adapter for provider_type '{config.provider_type}' yet",
            param="provider_type",
        ) from None
    return cls(config)
