"""What a pool's stream reports to its metrics sink, read off real provider runtimes (the echo adapter)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import ProviderConfig
from relay.errors import RelayError
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime
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


def echo(sink: Recorded) -> ProviderRuntime:
    config = ProviderConfig(provider_id="echo", provider_type="echo", model="echo")
    return ProviderRuntime(config, LoadGauge(), metrics=sink)


async def test_a_stream_reports_start_first_token_tokens_and_end() -> None:
    sink = Recorded()
    request = ChatRequest(provider="echo", messages=[{"role": "user", "content": "three little words"}])
    runtime = echo(sink)
    batches = [batch async for batch in runtime.stream(request)]
    assert "".join(e["content"] for b in batches for e in b if e["type"] == "text-delta") == "three little words"
    usage = next(e for b in batches for e in b if e["type"] == "usage")
    assert sink.calls == [
        ("started", "echo"),
        ("first_token", "echo"),
        ("tokens", "echo", usage["input_tokens"], usage["output_tokens"]),
        ("ended", "echo"),
    ]
    # the same pass keeps the routing counters
    stats = runtime.stats()
    assert (stats["requests"], stats["completed"], stats["errors"], stats["in_flight"]) == (1, 1, 0, 0)
    assert stats["ttft_ewma_ms"] is not None


async def test_a_failed_stream_reports_its_error_type() -> None:
    sink = Recorded()
    request = ChatRequest(
        provider="echo",
        messages=[{"role": "user", "content": "x"}],
        provider_options={"fault": "rate_limit"},
    )
    runtime = echo(sink)
    with pytest.raises(RelayError) as raised:
        async for _ in runtime.stream(request):
            pass
    assert ("failed", "echo", raised.value.error_type) in sink.calls and sink.calls[-1] == ("ended", "echo")
    stats = runtime.stats()
    assert (stats["requests"], stats["completed"], stats["errors"], stats["in_flight"]) == (1, 0, 1, 0)
