"""Generator modes as pure transformations, fed from scripted streams (no Ray, no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.errors import InvalidRequest, ProviderError
from relay.events import finish, status, text_delta
from relay.modes import GENERATOR_MODES, QUEUED_BATCHES, GeneratorConfig, apply_mode, interleave, register_mode
from relay.session.runlog import Cursor
from relay.types import Batch


async def scripted(batches: list[Batch], gate: asyncio.Event | None = None, after: int = 0) -> AsyncIterator[Batch]:
    """Yield the batches; with ``gate``, stop after ``after`` batches until the gate opens."""
    for i, batch in enumerate(batches):
        if gate is not None and i == after:
            await gate.wait()
        yield batch


async def run(mode: str, batches: list[Batch], **config: Any) -> list[Batch]:
    return [b async for b in apply_mode(scripted(batches), GeneratorConfig(mode=mode, **config))]


def text(batches: list[Batch]) -> str:
    return "".join(e["content"] for b in batches for e in b if e["type"] == "text-delta")


WORDS = [[text_delta(w)] for w in ("alpha ", "beta ", "gamma ", "delta")] + [[finish("stop")]]


async def test_standard_passes_batches_through() -> None:
    assert await run("standard", WORDS) == WORDS


async def test_buffered_flushes_on_size_and_before_other_events() -> None:
    out = await run("buffered", WORDS, buffer_size=10, flush_interval=10)
    assert [e["content"] for b in out for e in b if e["type"] == "text-delta"] == ["alpha beta ", "gamma delta"]
    assert out[-1][-1] == finish("stop") and text(out) == text(WORDS)


async def test_buffered_flushes_on_the_interval_while_the_stream_stalls() -> None:
    gate = asyncio.Event()
    stream = apply_mode(
        scripted(WORDS, gate, after=2), GeneratorConfig(mode="buffered", buffer_size=1000, flush_interval=0.01)
    )
    first = await anext(stream)  # arrives although the source is stalled: the interval flushed it
    assert first == [text_delta("alpha beta ")]
    gate.set()
    assert text([first, *[b async for b in stream]]) == text(WORDS)


async def test_chunked_recuts_text_to_the_chunk_size() -> None:
    out = await run("chunked", WORDS, chunk_size=4)
    pieces = [e["content"] for b in out for e in b if e["type"] == "text-delta"]
    assert all(len(p) == 4 for p in pieces[:-1]) and "".join(pieces) == text(WORDS)
    assert out[-1][-1] == finish("stop")


async def test_priority_lets_urgent_events_overtake_queued_text() -> None:
    # The source never suspends, so by the time the reader looks, everything is queued behind the first batch.
    source = [[text_delta("a")], [text_delta("b")], [status("retrying", "x")], [text_delta("c")], [finish("stop")]]
    out = await run("priority", source)
    assert out == [[status("retrying", "x"), text_delta("a"), text_delta("b"), text_delta("c"), finish("stop")]]


async def test_interleaved_merges_and_tags_each_provider() -> None:
    out = [
        b
        async for b in interleave(
            {"p1": scripted([*WORDS[:2], [finish("stop")]]), "p2": scripted([[text_delta("x")], [finish("length")]])}
        )
    ]
    by_provider: dict[str, str] = {}
    for event in (e for b in out for e in b):
        if event["type"] == "text-delta":
            by_provider[event["provider"]] = by_provider.get(event["provider"], "") + event["content"]
    assert by_provider == {"p1": "alpha beta ", "p2": "x"}
    assert sorted(e["provider"] for b in out for e in b if e["type"] == "finish") == ["p1", "p2"]


async def test_errors_propagate_through_modes() -> None:
    async def broken() -> AsyncIterator[Batch]:
        yield [text_delta("partial")]
        raise ProviderError("upstream died")

    for mode in ("buffered", "priority", "chunked"):
        with pytest.raises(ProviderError):
            [b async for b in apply_mode(broken(), GeneratorConfig(mode=mode))]
    with pytest.raises(ProviderError):
        [b async for b in interleave({"p": broken()})]


async def test_custom_modes_register_and_unknown_ones_are_refused() -> None:
    @register_mode("shout")
    async def shout(batches: AsyncIterator[Batch], config: GeneratorConfig) -> AsyncIterator[Batch]:
        async for batch in batches:
            yield [e | {"content": e["content"].upper()} if e["type"] == "text-delta" else e for e in batch]

    try:
        assert text(await run("shout", WORDS)) == "ALPHA BETA GAMMA DELTA"
    finally:
        del GENERATOR_MODES["shout"]
    with pytest.raises(InvalidRequest) as exc:
        apply_mode(scripted(WORDS), GeneratorConfig(mode="telepathic"))
    assert exc.value.param == "generator_mode"


def numbered(batches: list[Batch]) -> list[Batch]:
    """The batches with run-log ids 1, 2, … as the session gives them."""
    count = 0
    out = []
    for batch in batches:
        out.append([event | {"id": (count := count + 1)} for event in batch])
    return out


async def resume_text(source: list[Batch], delivered: list[dict[str, Any]]) -> str:
    """The text a client ends with when it saw ``delivered``, dropped, and resumed from its last id."""
    last = max((i for i, event in enumerate(delivered) if "id" in event), default=-1)
    cursor = Cursor.parse(delivered[last]["id"]) if last >= 0 else Cursor()

    async def rest() -> AsyncIterator[Batch]:
        yield [event for batch in source for event in batch if event["id"] > cursor.event]

    # Events past the last id are ones the client cannot vouch for: resuming sends them again.
    return text([delivered[: last + 1]]) + text([b async for b in cursor.skip_seen(rest())])


SENTENCE = numbered([[text_delta(w)] for w in ("The ", "quick ", "brown ", "fox ", "jumps ")] + [[finish("stop")]])


async def test_buffered_text_carries_the_id_of_the_last_event_merged() -> None:
    out = await run("buffered", SENTENCE, buffer_size=10, flush_interval=10)
    assert [(e["content"], e["id"]) for b in out for e in b if e["type"] == "text-delta"] == [
        ("The quick ", 2),
        ("brown fox ", 4),
        ("jumps ", 5),
    ]
    assert out[-1][-1]["id"] == 6


async def test_chunked_ids_resume_exactly_from_any_point() -> None:
    out = await run("chunked", SENTENCE, chunk_size=4)
    delivered = [e for b in out for e in b]
    assert [(e["content"], e["id"]) for e in delivered[:4]] == [
        ("The ", 1),
        ("quic", "2:4"),
        ("k br", "3:2"),
        ("own ", 3),
    ]
    assert text([delivered]) == text(SENTENCE)
    for cut in range(len(delivered) + 1):
        assert await resume_text(SENTENCE, delivered[:cut]) == text(SENTENCE), cut


async def test_priority_ids_are_cursors_that_never_skip_overtaken_text() -> None:
    source = numbered(
        [[text_delta("a")], [text_delta("b")], [status("retrying", "x")], [text_delta("c")], [finish("stop")]]
    )
    [delivered] = await run("priority", source)
    assert [e["type"] for e in delivered] == ["status", "text-delta", "text-delta", "text-delta", "finish"]
    assert [e.get("id") for e in delivered] == [None, 1, 3, 4, 5]  # the status overtook 1 and 2: no id until they land
    for cut in range(len(delivered) + 1):
        assert await resume_text(source, delivered[:cut]) == "abc", cut


async def test_a_stalled_reader_holds_the_producer_back() -> None:
    produced = 0

    async def endless() -> AsyncIterator[Batch]:
        nonlocal produced
        while True:
            produced += 1
            yield [text_delta("x")]
            await asyncio.sleep(0)

    for stream in (
        apply_mode(endless(), GeneratorConfig(mode="priority")),
        apply_mode(endless(), GeneratorConfig(mode="buffered", buffer_size=1)),
        interleave({"a": endless(), "b": endless()}),
    ):
        produced = 0
        await anext(stream)
        for _ in range(500):  # let the producers run as far as they can while nobody reads
            await asyncio.sleep(0)
        assert produced <= 2 * (QUEUED_BATCHES + 3), produced
        await stream.aclose()  # type: ignore[attr-defined]
