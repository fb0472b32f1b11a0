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


def test_the_window_grows_with_the_streams_and_faster_under_light_load() -> None:
    def window_ms(streams: int) -> float:
        return round(LoadGauge(base_s=0.02, per_window=4.0, active=streams).window() * 1000, 6)

    # base x streams up to 8 streams, flat until base x streams / per_window overtakes it, then that
    assert [window_ms(n) for n in (1, 4, 8, 16, 32, 64, 128)] == [20, 80, 160, 160, 160, 320, 640]
    assert LoadGauge(base_s=0.02, per_window=4.0).window(hint=4) == pytest.approx(0.08)  # a caller's load hint


async def test_the_finish_ends_a_window_that_started_before_it() -> None:
    """The last tokens and the finish go out when the finish comes, not when a long window would end."""
    released = [asyncio.Event(), asyncio.Event()]  # token "1", then the finish

    class Gauge(LoadGauge):
        calls = 0

        def window(self, hint: int = 1) -> float:
            # each call is the consumer deciding how long to hold a batch: the 2nd holds token "1" for 1,000 s,
            # and the finish comes while it waits
            released[min(Gauge.calls, 1)].set()
            Gauge.calls += 1
            return 1000.0

    async def source() -> AsyncIterator[dict[str, Any]]:
        yield text_delta("0")
        await released[0].wait()
        yield text_delta("1")
        await released[1].wait()
        yield finish("stop")

    async def drain() -> list[list[dict[str, Any]]]:
        return [batch async for batch in coalesce(source(), Gauge())]

    batches = await asyncio.wait_for(drain(), timeout=30)  # a hang guard: the window is 1,000 s
    assert batches[0] == [text_delta("0")]
    assert [e["type"] for b in batches[1:] for e in b] == ["text-delta", "finish"]


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
