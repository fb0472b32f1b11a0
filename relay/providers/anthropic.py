"""``anthropic``: the official ``AsyncAnthropic`` client, read as raw SSE.

Requests are translated from Relay's OpenAI-shaped messages and the stream back
to Relay events by ``relay.wire.anthropic``. Reading raw events also means a
mid-stream ``event: error`` is classified by its ``error.type``, which the SDK's
own stream would raise as a status-200 error (anthropic-sdk-python#1258).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anthropic
import orjson

from relay.errors import ProviderError, RelayError, error_for_status
from relay.providers.base import SDKAdapter, map_sdk_error, pooled_client, retry_after_header, sse_stream
from relay.providers.features import BUILTIN_FEATURES
from relay.providers.structured import output_schema
from relay.request import ChatRequest
from relay.wire.anthropic import AnthropicStream, error_from_anthropic, structured_input_schema, to_anthropic_request

__all__ = ["AnthropicAdapter", "map_anthropic_error"]

# Newer SDKs dropped sampling parameters (temperature, top_p, top_k) from ``create``'s signature;
# whatever it does not name travels in ``extra_body``, as the API still accepts them.
_SDK_PARAMS = frozenset(inspect.signature(anthropic.resources.AsyncMessages.create).parameters) - {"self"}


def map_anthropic_error(exc: Exception, provider_id: str) -> RelayError:
    """Convert an SDK or transport exception at the boundary, classifying a status error by its ``error.type``."""
    return map_sdk_error(exc, provider_id, anthropic, _status_error)


def _status_error(exc: anthropic.APIStatusError, prefix: str) -> RelayError:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    if error:
        mapped = error_from_anthropic(error, prefix, exc.status_code)
        mapped.retry_after = retry_after_header(exc.response.headers)
        return mapped
    return error_for_status(exc.status_code, f"{prefix}upstream {exc.status_code}")


class AnthropicAdapter(SDKAdapter):
    provider_type = "anthropic"
    features: ClassVar[frozenset[str]] = BUILTIN_FEATURES["anthropic"]

    def create_client(self) -> anthropic.AsyncAnthropic:
        config = self.config
        return anthropic.AsyncAnthropic(
            api_key=config.resolve_key() or "not-set",
            base_url=config.base_url,
            max_retries=0,
            default_headers=config.default_headers or None,
            http_client=self.http_client or pooled_client(config),
        )

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        body = to_anthropic_request(request, request.model or self.config.default_model, self.config.default_max_tokens)
        schema = output_schema(request.params.get("response_format"))
        translator = AnthropicStream(
            structured=schema is not None,
            prefix=f"{self.config.provider_id}: ",
            wrapped=schema is not None and structured_input_schema(schema)[1],
        )
        finished = False
        try:
            create = self.client.messages.with_streaming_response.create
            known = {key: value for key, value in body.items() if key in _SDK_PARAMS}
            extra = {key: value for key, value in body.items() if key not in _SDK_PARAMS}
            async with (
                create(stream=True, **known, extra_body=extra or None) as response,
                sse_stream(response) as sse,
            ):
                # read to the end even after message_stop: a fully read body returns its connection to the pool
                async for kind, data in sse:
                    for event in translator.feed(kind, orjson.loads(data)):
                        finished = finished or event["type"] == "finish"
                        yield event
        except Exception as exc:
            raise map_anthropic_error(exc, self.config.provider_id) from None
        if not finished:
            raise ProviderError(f"{self.config.provider_id}: the upstream stream ended before message_stop")

    async def probe(self, client: Any) -> Any:
        return await client.models.list(limit=1)
