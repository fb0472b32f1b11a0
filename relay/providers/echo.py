"""``echo``: a keyless provider that streams the input back, with configurable pace and faults.

It is the embedded default and the load-test upstream. Options, from the
provider config or per request in ``provider_options``:

- ``ttft_ms``: delay before the first token;
- ``tokens_per_s``: pace (0 = as fast as possible);
- ``repeat``: repeat the echoed text N times;
- ``fault``: ``error`` (a provider error mid-stream, after ``fault_after`` tokens),
  ``rate_limit`` (a 429 before any token), ``hang`` (stop sending after
  ``fault_after`` tokens until cancelled).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from relay.errors import InvalidRequest, ProviderError, RateLimited
from relay.events import finish, text_delta, usage
from relay.providers.base import BaseProviderAdapter
from relay.providers.features import BUILTIN_FEATURES
from relay.request import ChatRequest, last_user_text

__all__ = ["EchoAdapter", "echo_tokens"]

_TOKEN = re.compile(r"\S+\s*|\s+")
FAULTS = ("error", "rate_limit", "hang")
# Each numeric option's bounds: a caller must not make one reply take gigabytes or hours.
_BOUNDS = {"ttft_ms": (0, 600_000), "tokens_per_s": (0, 1_000_000), "repeat": (0, 10_000), "fault_after": (0, 1 << 31)}


def echo_tokens(text: str, repeat: int = 1) -> list[str]:
    """The reply is the input, split into word tokens that keep their whitespace."""
    body = " ".join([text] * repeat) if text else "(empty message)"
    return _TOKEN.findall(body)


class EchoAdapter(BaseProviderAdapter):
    provider_type = "echo"
    features: ClassVar[frozenset[str]] = BUILTIN_FEATURES["echo"]

    def _options(self, request: ChatRequest) -> dict[str, Any]:
        options = {"ttft_ms": 0.0, "tokens_per_s": 0.0, "repeat": 1, "fault": None, "fault_after": 0}
        options.update(self.config.options)
        options.update(request.provider_options)
        for key, (low, high) in _BOUNDS.items():
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise InvalidRequest(
                    f"Echo option {key} must be a number from {low} to {high}", param=f"provider_options.{key}"
                )
        if options["fault"] not in (None, *FAULTS):
            raise InvalidRequest(
                f"Unknown echo fault {options['fault']!r}; use one of {', '.join(FAULTS)}",
                param="provider_options.fault",
            )
        return options

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        options = self._options(request)
        tokens = echo_tokens(last_user_text(request.messages), int(options["repeat"]))
        max_tokens = request.params.get("max_tokens")
        reason = "stop"
        if max_tokens and len(tokens) > max_tokens:
            tokens, reason = tokens[:max_tokens], "length"
        if options["fault"] == "rate_limit":
            raise RateLimited("echo: injected rate limit", retry_after=1.0)
        if options["ttft_ms"]:
            await asyncio.sleep(float(options["ttft_ms"]) / 1000)
        interval = 1.0 / float(options["tokens_per_s"]) if options["tokens_per_s"] else 0.0
        start = time.monotonic()
        for index, token in enumerate(tokens):
            if options["fault"] and index == int(options["fault_after"]):
                if options["fault"] == "hang":
                    await asyncio.Event().wait()
                raise ProviderError("echo: injected upstream failure")
            if interval:
                delay = start + index * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield text_delta(token)
        prompt_tokens = sum(len(echo_tokens(str(m.get("content") or ""))) for m in request.messages)
        yield usage(prompt_tokens, len(tokens))
        yield finish(reason)
