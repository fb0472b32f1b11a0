"""The OpenAI Chat Completions wire format: OpenAI and every OpenAI-compatible server.

The SDK owns auth, ``base_url``, retries and error mapping; the stream itself is
read as raw SSE lines and parsed with orjson, because the SDK's chunk objects
cost ~146 us each against ~23 us for this path (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx2
import openai
import orjson

from ..config import ProviderConfig
from ..errors import InvalidRequest, NotFound, ProviderError, ProviderTimeout, RateLimited, RelayError
from ..events import finish, reasoning_delta, text_delta
from ..request import ChatRequest
from .base import BaseProviderAdapter

__all__ = ["OpenAIAdapter", "OpenAICompatibleAdapter", "map_openai_error"]

FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return float(value) / scale
            except ValueError:
                return None
    return None


def map_openai_error(exc: Exception, provider_id: str) -> RelayError:
    """Convert an SDK exception at the boundary; the upstream message is kept, keys never are."""
    if isinstance(exc, RelayError):
        return exc
    prefix = f"{provider_id}: "
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout(prefix + "upstream timed out")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(prefix + "could not connect to upstream")
    if isinstance(exc, openai.APIStatusError):
        message = prefix + _upstream_message(exc)
        status = exc.status_code
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(exc.response.headers))
        if status in (400, 422):
            return InvalidRequest(message, param=(exc.body or {}).get("param") if isinstance(exc.body, dict) else None)
        if status == 404:
            return NotFound(message)
        if status == 408:
            return ProviderTimeout(message)
        return ProviderError(message)
    if isinstance(exc, openai.APIError):
        return ProviderError(prefix + exc.message)
    return ProviderError(prefix + f"{type(exc).__name__}: {exc}")


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return f"upstream {exc.status_code}: {inner['message']}"
    return f"upstream {exc.status_code}"


class OpenAIAdapter(BaseProviderAdapter):
    provider_type = "openai"
    features: ClassVar[frozenset[str]] = frozenset(
        {"streaming", "text", "tools", "images", "audio", "files", "structured_output", "reasoning"}
    )

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        limits = httpx2.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
        self.client = openai.AsyncOpenAI(
            api_key=config.resolve_key() or "not-needed",
            base_url=config.base_url,
            organization=config.organization,
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=config.default_headers or None,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )

    async def aclose(self) -> None:
        await self.client.close()

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        params = dict(request.params)
        if "max_tokens" in params:
            params["max_completion_tokens" if self.provider_type == "openai" else "max_tokens"] = params.pop(
                "max_tokens"
            )
        if request.user:
            params["user"] = request.user
        return params

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        tools: dict[int, dict[str, Any]] = {}
        reason: str | None = None
        try:
            async with self.client.chat.completions.with_streaming_response.create(
                model=request.model or self.config.default_model,
                messages=request.messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                **self._body(request),
            ) as response:
                async for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = orjson.loads(data)
                    if "error" in chunk:
                        raise ProviderError(f"{self.config.provider_id}: {chunk['error'].get('message', 'error')}")
                    for event in self._translate(chunk, tools):
                        if event["type"] == "finish":
                            reason = event["reason"]
                        else:
                            yield event
        except Exception as exc:
            raise map_openai_error(exc, self.config.provider_id) from None
        for index in sorted(tools):
            call = tools[index]
            yield {
                "type": "tool-call-end",
                "index": index,
                "tool_call_id": call["id"],
                "name": call["name"],
                "arguments": "".join(call["arguments"]),
            }
        yield finish(reason or "stop")

    @staticmethod
    def _translate(chunk: dict[str, Any], tools: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(reasoning_delta(reasoning))
            if delta.get("content"):
                events.append(text_delta(delta["content"]))
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in tools:
                    tools[index] = {"id": call.get("id", ""), "name": function.get("name", ""), "arguments": []}
                    events.append(
                        {
                            "type": "tool-call-start",
                            "index": index,
                            "tool_call_id": tools[index]["id"],
                            "name": tools[index]["name"],
                        }
                    )
                fragment = function.get("arguments")
                if fragment:
                    tools[index]["arguments"].append(fragment)
                    events.append({"type": "tool-call-delta", "index": index, "arguments_delta": fragment})
            if choice.get("finish_reason"):
                events.append(finish(FINISH_REASONS.get(choice["finish_reason"], "stop")))
        usage = chunk.get("usage")
        if usage:
            events.append(
                {
                    "type": "usage",
                    "input_tokens": usage.get("prompt_tokens") or 0,
                    "output_tokens": usage.get("completion_tokens") or 0,
                    "cache_read_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
                    "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
                }
            )
        return events


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Ollama, vLLM, LM Studio, DeepSeek and the like: the OpenAI wire, another ``base_url``."""

    provider_type = "openai_compatible"
