"""``azure``: Azure OpenAI through the official ``AsyncAzureOpenAI`` client.

``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``),
``deployment`` the deployment name (defaults to ``model``) and ``api_version``
the API version; the key comes from ``api_key_env`` (e.g. ``AZURE_OPENAI_API_KEY``).
With ``api: responses`` the SDK calls ``{base_url}/openai/responses`` and the
deployment goes in the body's ``model``.
"""

from __future__ import annotations

from typing import ClassVar

import openai

from relay.errors import InvalidRequest
from relay.providers.base import pooled_client
from relay.providers.openai import OpenAIAdapter
from relay.request import ChatRequest

__all__ = ["AzureOpenAIAdapter", "DEFAULT_API_VERSION", "DEFAULT_RESPONSES_API_VERSION"]

DEFAULT_API_VERSION = "2024-10-21"
# The Responses API is not in the GA chat version above; Azure documents it from the 2025 previews.
DEFAULT_RESPONSES_API_VERSION = "2025-04-01-preview"


class AzureOpenAIAdapter(OpenAIAdapter):
    provider_type = "azure"
    max_tokens_param: ClassVar[str] = "max_tokens"

    def create_client(self) -> openai.AsyncOpenAI:
        config = self.config
        if not config.base_url:
            raise InvalidRequest(
                f"Provider '{config.provider_id}': azure needs base_url, the resource endpoint", param="base_url"
            )
        return openai.AsyncAzureOpenAI(
            api_key=config.resolve_key() or "not-set",
            azure_endpoint=config.base_url,
            azure_deployment=config.deployment or config.default_model,
            api_version=config.api_version
            or (DEFAULT_RESPONSES_API_VERSION if config.api == "responses" else DEFAULT_API_VERSION),
            organization=config.organization,
            max_retries=0,
            default_headers=config.default_headers or None,
            http_client=self.http_client or pooled_client(config),
        )

    def responses_model(self, request: ChatRequest) -> str:
        return self.config.deployment or super().responses_model(request)
