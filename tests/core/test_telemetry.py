"""What a pool's stream reports to its metrics sink, read off real provider runtimes (the echo adapter)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import ProviderConfig
from relay.errors import RelayError
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
from relay.providers.telemetry import observe
from relay.request import ChatRequest


class Recorded:
    """A ``MetricsSink`` that keeps what it was told; Ray's real one is scraped by the integration test."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def started(self, provider: str) -> None:
        self.calls.append(("started", provider))

    def first_token(self, provider: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(("first_token", provider))

    def tokens(self, provider: str, input_tokens: int, output_tokens: int) -> None:
        self.calls.append(("tokens", provider, input_tokens, output_tokens))

    def failed(self, provider: str, error_type: str) -> None:
        self.calls.append(("failed", provider, error_type))

    def ended(self, provider: str) -> None:
        self.calls.append(("ended", provider))


def echo() -> ProviderRuntime:
    return ProviderRuntime(ProviderConfig(provider_id="echo", provider_type="echo", model="echo"), LoadGauge())


async def test_a_stream_reports_start_first_token_tokens_and_end() -> None:
    sink = Recorded()
    request = ChatRequest(provider="echo", messages=[{"role": "user", "content": "three little words"}])
    batches = [batch async for batch in observe(echo().stream(request), "echo", sink)]
    assert "".join(e["content"] for b in batches for e in b if e["type"] == "text-delta") == "three little words"
    usage = next(e for b in batches for e in b if e["type"] == "usage")
    assert sink.calls == [
        ("started", "echo"),
        ("first_token", "echo"),
        ("tokens", "echo", usage["input_tokens"], usage["output_tokens"]),
        ("ended", "echo"),
    ]


async def test_a_failed_stream_reports_its_error_type() -> None:
    sink = Recorded()
    request = ChatRequest(
        provider="echo",
        messages=[{"role": "user", "content": "x"}],
        provider_options={"fault": "rate_limit"},
    )
    with pytest.raises(RelayError) as raised:
        async for _ in observe(echo().stream(request), "echo", sink):
            pass
    assert ("failed", "echo", raised.value.error_type) in sink.calls and sink.calls[-1] == ("ended", "echo")
