"""A custom provider, written as the README shows: subclass, declare features, stream events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from relay.events import finish, text_delta, usage
from relay.providers import BaseProviderAdapter
from relay.request import ChatRequest, last_user_text


class ShoutAdapter(BaseProviderAdapter):
    provider_type = "shout"
    features: ClassVar[frozenset[str]] = frozenset({"streaming", "text"})

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        words = last_user_text(request.messages).upper().split()
        for word in words:
            yield text_delta(word + self.config.options.get("suffix", "!") + " ")
        yield usage(input_tokens=len(words), output_tokens=len(words))
        yield finish("stop")
