"""``openai``: the official ``AsyncOpenAI`` client, read as raw SSE.

The SDK owns auth, ``base_url`` and error classes; Relay owns retries (the
SDK's are off) and parses the stream itself: Chat Completions by default
(``relay.wire.openai``), the Responses API with ``api: responses``
(``relay.wire.openai_responses``). Either way one streamed call serves both
streaming and non-streaming turns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import openai
import orjson

from relay.errors import ProviderError, RelayError, error_for_status
from relay.providers.base import SDKAdapter, map_sdk_error, pooled_client, retry_after_header, sse_stream
from relay.providers.features import BUILTIN_FEATURES
from relay.request import ChatRequest
from relay.wire.openai import OpenAIStream, prepare_messages
from relay.wire.openai_responses import ResponsesStream, responses_body

__all__ = ["OpenAIAdapter", "map_openai_error"]

# Parameters only other wire formats understand; never sent to an OpenAI-shaped server.
_FOREIGN = ("thinking", "top_k")


def map_openai_error(exc: Exception, provider_id: str) -> RelayError:
    """Convert an SDK or transport exception at the boundary; the upstream message is kept, keys never are."""
    return map_sdk_error(exc, provider_id, openai, _status_error)


def _status_error(exc: openai.APIStatusError, prefix: str) -> RelayError:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    detail = inner.get("message")
    if exc.status_code == 401:  # OpenAI's 401 quotes the key it was given (partly masked): never pass it on
        detail = "the provider rejected its API key"
    message = f"{prefix}upstream {exc.status_code}" + (f": {detail}" if detail else "")
    code = inner.get("code")
    return error_for_status(
        exc.status_code,
        message,
        param=inner.get("param"),
        code=str(code) if code is not None else None,  # vLLM sends the status as an integer code
        retry_after=retry_after_header(exc.response.headers),
    )


class OpenAIAdapter(SDKAdapter):
    provider_type = "openai"
    features: ClassVar[frozenset[str]] = BUILTIN_FEATURES["openai"]
    # The OpenAI API renamed max_tokens; compatible servers still expect the old name.
    max_tokens_param: ClassVar[str] = "max_completion_tokens"

    def create_client(self) -> openai.AsyncOpenAI:
        config = self.config
        return openai.AsyncOpenAI(
            api_key=config.resolve_key() or "not-needed",
            base_url=config.base_url,
            organization=config.organization,
            max_retries=0,
            default_headers=config.default_headers or None,
            http_client=self.http_client or pooled_client(config),
        )

    def responses_model(self, request: ChatRequest) -> str:
        """The ``model`` of a Responses call; Azure names its deployment there (it has no deployment URL)."""
        return request.model or self.config.default_model

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        params = {key: value for key, value in request.params.items() if key not in _FOREIGN}
        if "max_tokens" in params:
            params[self.max_tokens_param] = params.pop("max_tokens")
        if request.user:
            params["user"] = request.user
        return params

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        if self.config.api == "responses":
            async for event in self._stream_responses(request):
                yield event
            return
        translator = OpenAIStream()
        done = False
        try:
            async with (
                self.client.chat.completions.with_streaming_response.create(
                    model=request.model or self.config.default_model,
                    messages=prepare_messages(request.messages),  # type: ignore[arg-type]
                    stream=True,
                    stream_options={"include_usage": True},
                    **self._body(request),
                ) as response,
                sse_stream(response) as sse,
            ):
                # read to the end even after [DONE]: a fully read body returns its connection to the pool
                async for _, data in sse:
                    if data == "[DONE]":
                        done = True
                        continue
                    chunk = orjson.loads(data)
                    if "error" in chunk:
                        error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                        raise ProviderError(f"{self.config.provider_id}: upstream error: {error.get('message', '')}")
                    for event in translator.feed(chunk):
                        yield event
        except Exception as exc:
            raise map_openai_error(exc, self.config.provider_id) from None
        if not done and translator.reason is None:
            raise ProviderError(f"{self.config.provider_id}: the upstream stream ended before it finished")
        for event in translator.close():
            yield event

    async def _stream_responses(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """The Responses API (RESPONSES.md §3): no ``[DONE]``, the stream ends after its terminal event."""
        translator = ResponsesStream(self.config.provider_id)
        params = request.params | ({"user": request.user} if request.user else {})
        try:
            async with (
                self.client.responses.with_streaming_response.create(
                    model=self.responses_model(request), stream=True, **responses_body(params, request.messages)
                ) as response,
                sse_stream(response) as sse,
            ):
                async for _, data in sse:
                    if data == "[DONE]":  # not sent by OpenAI, but tolerated by both SDKs (§3)
                        continue
                    for event in translator.feed(orjson.loads(data)):
                        yield event
        except Exception as exc:
            raise map_openai_error(exc, self.config.provider_id) from None
        if translator.reason is None:
            raise ProviderError(f"{self.config.provider_id}: the upstream stream ended before it finished")
        for event in translator.close():
            yield event
