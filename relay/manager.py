"""The seed's in-process provider API (``MultiProviderManager``), over the same runtime the pools run.

    manager = get_multi_provider_manager()
    manager.register_anthropic_provider("claude", api_key=..., model_name="claude-sonnet-4-5")
    async for event in manager.stream_chat("claude", [{"role": "user", "content": "Hi"}]):
        ...
    person = await manager.complete("claude", messages, response_model=Person)

No Ray is involved: this is for scripts, notebooks and tests. Retries, the
breaker, fallbacks and structured-output validation behave as on a cluster.
Local file paths in messages are read, since the caller is trusted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar, overload

import httpx2
from pydantic import BaseModel

from relay.config import ProviderConfig, ProviderType
from relay.errors import NotFound
from relay.providers.base import BaseProviderAdapter
from relay.providers.coalesce import LoadGauge
from relay.providers.features import check_features
from relay.providers.media import MediaPolicy, normalize_messages
from relay.providers.resilience import with_fallback
from relay.providers.runtime import ProviderRuntime
from relay.providers.structured import parse, response_format_for
from relay.reply import Reply
from relay.request import ChatRequest, Target

__all__ = ["MultiProviderManager", "get_multi_provider_manager"]

M = TypeVar("M", bound=BaseModel)


class MultiProviderManager:
    def __init__(self, providers: list[ProviderConfig] | None = None) -> None:
        self.gauge = LoadGauge()
        self.runtimes: dict[str, ProviderRuntime] = {}
        self.media = MediaPolicy(allowed_dirs=None)
        for config in providers or ():
            self.register(config)

    def register(self, config: ProviderConfig, *, http_client: httpx2.AsyncClient | None = None) -> BaseProviderAdapter:
        runtime = ProviderRuntime(config, self.gauge, http_client=http_client)
        if runtime.adapter is None:
            assert runtime.unavailable is not None
            raise runtime.unavailable
        self.runtimes[config.provider_id] = runtime
        return runtime.adapter

    def register_provider(
        self,
        provider_id: str,
        provider_type: str,
        model_name: str | None = None,
        *,
        http_client: httpx2.AsyncClient | None = None,
        **options: Any,
    ) -> BaseProviderAdapter:
        """Options are ``ProviderConfig`` fields: ``base_url``, ``timeout``, ``max_retries``, ``default_headers``…"""
        config = ProviderConfig(provider_id=provider_id, provider_type=provider_type, model=model_name, **options)
        return self.register(config, http_client=http_client)

    def register_openai_provider(
        self, provider_id: str, api_key: str | None = None, model_name: str = "gpt-4o-mini", **options: Any
    ) -> BaseProviderAdapter:
        return self.register_provider(provider_id, ProviderType.OPENAI, model_name, api_key=api_key, **options)

    def register_anthropic_provider(
        self, provider_id: str, api_key: str | None = None, model_name: str = "claude-sonnet-4-5", **options: Any
    ) -> BaseProviderAdapter:
        return self.register_provider(provider_id, ProviderType.ANTHROPIC, model_name, api_key=api_key, **options)

    def get_adapter(self, provider_id: str) -> BaseProviderAdapter:
        adapter = self._runtime(provider_id).adapter
        assert adapter is not None
        return adapter

    def _runtime(self, provider_id: str) -> ProviderRuntime:
        try:
            return self.runtimes[provider_id]
        except KeyError:
            raise NotFound(f"Unknown provider '{provider_id}'", param="provider_id") from None

    def _request(
        self, provider_id: str, messages: list[dict[str, Any]], fallbacks: list[str], params: dict[str, Any]
    ) -> ChatRequest:
        config = self._runtime(provider_id).config
        request = ChatRequest(
            provider=provider_id,
            model=params.pop("model", None) or config.default_model,
            messages=normalize_messages(messages, self.media),
            params={key: value for key, value in params.items() if value is not None},
            fallbacks=[Target(p, self._runtime(p).config.default_model) for p in fallbacks or config.fallbacks],
        )
        check_features(config, request)
        return request

    async def stream_chat(
        self,
        provider_id: str,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        fallbacks: list[str] | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Normalized events (``relay.events``), ending with one ``finish``; retried and falling back as configured."""
        request = self._request(provider_id, messages, fallbacks or [], params | {"tools": tools})
        async for _, batch in with_fallback(request, lambda r: self._runtime(r.provider).stream(r)):
            for event in batch:
                yield event

    @overload
    async def complete(
        self, provider_id: str, messages: list[dict[str, Any]], *, response_model: type[M], **params: Any
    ) -> M: ...

    @overload
    async def complete(
        self, provider_id: str, messages: list[dict[str, Any]], *, response_model: None = None, **params: Any
    ) -> Reply: ...

    async def complete(
        self,
        provider_id: str,
        messages: list[dict[str, Any]],
        *,
        response_model: type[M] | None = None,
        **params: Any,
    ) -> M | Reply:
        """The whole reply; with ``response_model``, the validated Pydantic object."""
        if response_model is not None:
            params["response_format"] = response_format_for(response_model)
        reply = Reply()
        async for event in self.stream_chat(provider_id, messages, **params):
            reply.add(event)
        return parse(reply.content, response_model) if response_model is not None else reply

    async def health_check_all(self) -> dict[str, dict[str, Any]]:
        return {provider_id: await runtime.health() for provider_id, runtime in self.runtimes.items()}

    async def aclose(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.aclose()


_manager: MultiProviderManager | None = None


def get_multi_provider_manager() -> MultiProviderManager:
    """The process-wide manager, as the seed's module-level accessor."""
    global _manager
    if _manager is None:
        _manager = MultiProviderManager()
    return _manager
