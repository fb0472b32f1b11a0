from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.events import finish, reasoning_delta, text_delta
from relay.providers.coalesce import LoadGauge, coalesce, merge_deltas


async def paced(n: int, gap: asyncio.Event | None = None) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        if gap is not None and i == 1:
            await gap.wait()
        yield text_delta(str(i))
    yield finish("stop")


async def test_a_lone_stream_flushes_its_first_event_at_once() -> None:
    release = asyncio.Event()
    batches = coalesce(paced(3, release), LoadGauge())
    first = await anext(batches)
    assert first == [text_delta("0")]  # delivered while the source still waits
    release.set()
    rest = [batch async for batch in batches]
    assert [e["content"] for b in rest for e in b if e["type"] == "text-delta"] == ["1", "2"]
    assert rest[-1][-1]["type"] == "finish"


async def test_heavy_load_packs_many_events_per_batch_and_keeps_them_all() -> None:
    gauge = LoadGauge(base_s=0.02, per_window=1.0, active=100)  # a 2 s window
    batches = [batch async for batch in coalesce(paced(50), gauge)]
    events = [e for b in batches for e in b]
    assert "".join(e["content"] for e in events[:-1]) == "".join(str(i) for i in range(50))
    assert events[-1]["type"] == "finish"
    assert len(batches) <= 3
    assert len(events) <= 4  # a batch's deltas travel as one event


async def test_the_gauge_counts_streams_in_flight() -> None:
    gauge = LoadGauge()
    release = asyncio.Event()
    batches = coalesce(paced(2, release), gauge)
    await anext(batches)
    assert gauge.active == 1
    release.set()
    async for _ in batches:
        pass
    assert gauge.active == 0


async def test_source_errors_reach_the_consumer_after_earlier_events() -> None:
    async def broken() -> AsyncIterator[dict[str, Any]]:
        yield text_delta("ok")
        raise RuntimeError("upstream broke")

    seen: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="upstream broke"):
        async for batch in coalesce(broken(), LoadGauge()):
            seen.extend(batch)
    assert seen == [text_delta("ok")]


def test_merging_joins_runs_of_plain_deltas_only() -> None:
    tagged = {"type": "text-delta", "content": "x", "provider": "a"}
    arguments = {"type": "tool-call-delta", "index": 0, "arguments_delta": "{"}
    batch = [
        reasoning_delta("th"),
        reasoning_delta("ink"),
        text_delta("a"),
        text_delta("b"),
        arguments,
        text_delta("c"),
        tagged,
        text_delta("d"),
        finish("stop"),
    ]
    assert merge_deltas(batch) == [
        reasoning_delta("think"),
        text_delta("ab"),
        arguments,
        text_delta("c"),
        tagged,
        text_delta("d"),
        finish("stop"),
    ]
