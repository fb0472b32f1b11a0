"""A runtime the shared pool's LRU drops is closed only once its last stream has ended."""

from __future__ import annotations

import asyncio

from actors.shared_pool import _Held
from relay.config import ProviderConfig
from relay.providers.coalesce import LoadGauge
from relay.providers.runtime import ProviderRuntime


def runtime() -> ProviderRuntime:
    config = ProviderConfig(
        provider_id="p", provider_type="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1"
    )
    return ProviderRuntime(config, LoadGauge(0.02, 4.0))


async def settle() -> None:
    """Let the close scheduled with call_soon_threadsafe start and finish."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_eviction_waits_for_the_last_stream_then_closes_the_client() -> None:
    held = _Held(runtime())
    client = held.runtime.adapter.client  # type: ignore[union-attr]
    held.streams = 1
    held.__del__()  # what Serve calls when its LRU evicts the provider
    await settle()
    assert held.evicted and not client.is_closed()  # the stream still relays through it
    held.release()
    await settle()
    assert client.is_closed()


async def test_an_idle_runtime_is_closed_at_once_and_only_once() -> None:
    held = _Held(runtime())
    client = held.runtime.adapter.client  # type: ignore[union-attr]
    held.__del__()
    held.__del__()  # Python calls it again at collection
    await settle()
    assert client.is_closed() and held.closed
