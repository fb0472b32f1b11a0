"""The one small seam every provider implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ..config import ProviderConfig
from ..errors import UnsupportedFeature
from ..request import ChatRequest

__all__ = ["BaseProviderAdapter", "request_features"]


def request_features(request: ChatRequest) -> set[str]:
    """The features a request uses, named as ``supports_feature`` expects them."""
    features = {"streaming"}
    if request.params.get("tools"):
        features.add("tools")
    if request.params.get("response_format", {}).get("type") in ("json_object", "json_schema"):
        features.add("structured_output")
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                features.add({"image_url": "images", "input_audio": "audio", "file": "files"}.get(part["type"], "text"))
    return features


class BaseProviderAdapter(abc.ABC):
    """An adapter turns a ``ChatRequest`` into normalized events through one wire format.

    ``stream_chat`` yields event dicts (see ``relay.events``) and ends with exactly
    one ``finish``. Errors are raised as ``RelayError``; SDK exceptions never leak.
    """

    provider_type: ClassVar[str]
    features: ClassVar[frozenset[str]] = frozenset({"streaming", "text"})

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]: ...

    def supports_feature(self, feature: str) -> bool:
        return feature in self.features

    def check_features(self, request: ChatRequest) -> None:
        for feature in sorted(request_features(request)):
            if not self.supports_feature(feature):
                raise UnsupportedFeature(
                    f"Provider '{self.config.provider_id}' ({self.provider_type}) does not support {feature}",
                    param=feature,
                )

    async def health(self) -> dict[str, Any]:
        return {"provider_id": self.config.provider_id, "provider_type": self.provider_type, "ok": True}

    async def aclose(self) -> None:
        return None
