"""What each provider can do, as data: the ingress checks a request against it without importing any SDK.

The built-in types are a table here (their adapters read their ``features`` from
it); a custom adapter declares its own ``features`` and is loaded to read them. A
provider's config may narrow or widen the set (``features:``), e.g. for an
OpenAI-compatible server without tool calling.

A request is checked once per provider: the ingress checks the providers it
resolved (the primary, or a route's pools) and records them on the request;
the pool checks only a provider nobody checked yet, a fallback link or an
evaluation cell, and a fallback that lacks a feature is then skipped
(``relay.providers.resilience``).
"""

from __future__ import annotations

from relay.config import ProviderConfig
from relay.errors import UnsupportedFeature
from relay.request import ChatRequest

__all__ = ["BUILTIN_FEATURES", "check_features", "features_for", "known_type", "request_features"]

_OPENAI = frozenset({"streaming", "text", "tools", "images", "audio", "files", "structured_output", "reasoning"})
BUILTIN_FEATURES: dict[str, frozenset[str]] = {
    "echo": frozenset({"streaming", "text", "images", "files", "audio"}),
    "openai": _OPENAI,
    "azure": _OPENAI,
    "openai_compatible": _OPENAI,
    "anthropic": frozenset(
        {"streaming", "text", "tools", "images", "files", "structured_output", "reasoning", "citations"}
    ),
}
_PART_FEATURES = {"image_url": "images", "input_audio": "audio", "file": "files", "text": "text"}


def known_type(config: ProviderConfig) -> None:
    """An unknown ``provider_type`` (or a custom adapter that does not load) is a 400 naming it."""
    if config.adapter or config.provider_type not in BUILTIN_FEATURES:
        from relay.providers import adapter_class  # a custom adapter: only its own module is imported

        adapter_class(config)


def features_for(config: ProviderConfig) -> frozenset[str]:
    if config.features is not None:
        return frozenset(config.features)
    if not config.adapter and config.provider_type in BUILTIN_FEATURES:
        if config.api == "responses":  # the Responses API takes no audio input parts (ResponseInputMessageContentList)
            return BUILTIN_FEATURES[config.provider_type] - {"audio"}
        return BUILTIN_FEATURES[config.provider_type]
    from relay.providers import adapter_class

    return adapter_class(config).features


def request_features(request: ChatRequest) -> set[str]:
    """The features a request uses, named as adapters declare them."""
    features = {"streaming", "text"}
    params = request.params
    if params.get("tools"):
        features.add("tools")
    if (params.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        features.add("structured_output")
    if params.get("reasoning_effort") or params.get("thinking"):
        features.add("reasoning")
    for message in request.messages:
        if message.get("tool_calls") or message.get("role") == "tool":
            features.add("tools")
        content = message.get("content")
        if isinstance(content, list):
            features.update(_PART_FEATURES.get(part["type"], part["type"]) for part in content)
    return features


def check_features(config: ProviderConfig, request: ChatRequest) -> None:
    """A 400 naming the provider and the feature, before any upstream call; the provider is then marked checked."""
    if config.provider_id in request.features_checked:
        return
    missing = sorted(request_features(request) - features_for(config))
    if missing:
        raise UnsupportedFeature(
            f"Provider '{config.provider_id}' ({config.provider_type}) does not support {', '.join(missing)}",
            param=missing[0],
            code="unsupported_feature",
        )
    request.features_checked = request.features_checked | {config.provider_id}
