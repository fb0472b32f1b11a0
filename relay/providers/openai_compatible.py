"""``openai_compatible``: Ollama, vLLM, LM Studio, DeepSeek, Zhipu and the like, through ``base_url``.

Same wire as OpenAI; differences are handled where they appear: ``max_tokens``
(not ``max_completion_tokens``), ``reasoning_content`` (DeepSeek) or
``reasoning`` (vLLM) deltas, and integer error codes (vLLM).
"""

from __future__ import annotations

from typing import ClassVar

from relay.providers.openai import OpenAIAdapter

__all__ = ["OpenAICompatibleAdapter"]


class OpenAICompatibleAdapter(OpenAIAdapter):
    provider_type = "openai_compatible"
    max_tokens_param: ClassVar[str] = "max_tokens"
