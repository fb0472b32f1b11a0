"""Generator modes: pure async transformations of a stream of event batches.

The seed's ``GeneratorMode``: ``standard`` passes batches through, ``buffered``
holds text until ``buffer_size`` bytes or ``flush_interval`` seconds,
``chunked`` re-cuts text into ``chunk_size``-character pieces, ``priority``
lets errors, tool calls and status updates overtake text still queued for a
slow reader, and ``interleaved`` merges several providers' streams, each
event tagged with its provider. Custom modes join through ``register_mode``:

    @register_mode("shout")
    async def shout(batches, config):
        async for batch in batches:
            yield [e | {"content": e["content"].upper()} if e["type"] == "text-delta" else e for e in batch]

Every mode keeps each delivered ``id`` a valid resume cursor (``runlog.Cursor``):
a client that resumes after the last id it saw gets exactly what it missed.
Merged text carries the id of the last event merged; a chunk that ends inside
an event carries ``"N:k"`` (k characters into event N). Queues between a
producer and a slow reader hold at most ``QUEUED_BATCHES``: the producer waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relay.errors import InvalidRequest
from relay.types import Batch, Batches

__all__ = [
    "GeneratorMode",
    "GeneratorConfig",
    "GENERATOR_MODES",
    "QUEUED_BATCHES",
    "register_mode",
    "apply_mode",
    "check_mode",
    "interleave",
]

Mode = Callable[[Batches, "GeneratorConfig"], Batches]
PRIORITY_TYPES = frozenset({"error", "status", "tool-call-start", "tool-call-delta", "tool-call-end"})
QUEUED_BATCHES = 32  # per queue: a slow reader holds its producer back instead of growing memory


class GeneratorMode(StrEnum):
    STANDARD = "standard"
    BUFFERED = "buffered"
    CHUNKED = "chunked"
    INTERLEAVED = "interleaved"
    PRIORITY = "priority"


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str = GeneratorMode.STANDARD
    buffer_size: int = Field(default=256, ge=1, le=1 << 20)
    flush_interval: float = Field(default=0.1, gt=0, le=10)
    chunk_size: int = Field(default=16, ge=1, le=1 << 16)


GENERATOR_MODES: dict[str, Mode] = {}


def register_mode(name: str) -> Callable[[Mode], Mode]:
    def add(mode: Mode) -> Mode:
        GENERATOR_MODES[name] = mode
        return mode

    return add


def check_mode(config: GeneratorConfig) -> None:
    """A 400 for an unknown mode, before any session or upstream call."""
    if config.mode != GeneratorMode.INTERLEAVED and config.mode not in GENERATOR_MODES:
        raise InvalidRequest(
            f"Unknown generator_mode {config.mode!r}; known: {', '.join(sorted([*GENERATOR_MODES, 'interleaved']))}",
            param="generator_mode",
        )


def apply_mode(batches: Batches, config: GeneratorConfig) -> Batches:
    """``interleaved`` is applied where the streams are opened (``interleave``); here it passes through."""
    check_mode(config)
    if config.mode == GeneratorMode.INTERLEAVED:
        return batches
    return GENERATOR_MODES[config.mode](batches, config)


@register_mode(GeneratorMode.STANDARD)
async def standard(batches: Batches, config: GeneratorConfig) -> Batches:
    async for batch in batches:
        yield batch


def _text(content: str, cursor: int | str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "text-delta", "content": content}
    if cursor is not None:
        event["id"] = cursor
    return event


class _Pump:
    """Reads a stream from a task, so the reader can wait with a timeout without cancelling the stream itself."""

    def __init__(self, batches: Batches) -> None:
        self.queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(QUEUED_BATCHES)
        self.task = asyncio.create_task(self._pump(batches))

    async def _pump(self, batches: Batches) -> None:
        try:
            async for batch in batches:
                await self.queue.put(batch)
        except Exception as exc:
            await self.queue.put(exc)
        await self.queue.put(None)

    def _checked(self, item: Batch | BaseException | None) -> Batch | None:
        if isinstance(item, BaseException):
            raise item
        return item

    async def get(self) -> Batch | None:
        """The next batch; None at the end."""
        return self._checked(await self.queue.get())

    def waiting(self) -> list[Batch | None]:
        """Whatever else is already queued."""
        items = []
        while not self.queue.empty():
            items.append(self._checked(self.queue.get_nowait()))
        return items

    async def aclose(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@register_mode(GeneratorMode.BUFFERED)
async def buffered(batches: Batches, config: GeneratorConfig) -> Batches:
    """Text is held until ``buffer_size`` bytes or ``flush_interval`` seconds; other events flush it first."""
    text: list[str] = []
    size = 0
    cursor: int | str | None = None
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    pump = _Pump(batches)
    try:
        while True:
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - loop.time())):
                    batch = await pump.get()
            except TimeoutError:
                batch = []
            out: Batch = []
            for event in batch or ():
                if event["type"] == "text-delta":
                    text.append(event["content"])
                    size += len(event["content"].encode())
                    cursor = event.get("id")
                    deadline = deadline or loop.time() + config.flush_interval
                    continue
                if text:
                    out.append(_text("".join(text), cursor))
                    text, size, deadline = [], 0, None
                out.append(event)
            if text and (batch is None or size >= config.buffer_size or loop.time() >= (deadline or 0)):
                out.append(_text("".join(text), cursor))
                text, size, deadline = [], 0, None
            if out:
                yield out
            if batch is None:
                return
    finally:
        await pump.aclose()


class _Cutter:
    """Text events re-cut to a fixed size; each piece's ``id`` says how far into the run it reaches."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pending: list[tuple[dict[str, Any], int]] = []  # (event, characters of it already cut)
        self.length = 0

    def add(self, event: dict[str, Any]) -> None:
        self.pending.append((event, 0))
        self.length += len(event["content"])

    def pieces(self, flush: bool = False) -> Batch:
        out = []
        while self.length >= self.size or (flush and self.pending):
            out.append(self._cut(min(self.size, self.length)))
        return out

    def _cut(self, wanted: int) -> dict[str, Any]:
        parts: list[str] = []
        cursor: int | str | None = None
        while self.pending and (wanted or not self.pending[0][0]["content"]):
            event, used = self.pending[0]
            content = event["content"]
            take = min(wanted, len(content) - used)
            parts.append(content[used : used + take])
            used += take
            wanted -= take
            if used == len(content):
                self.pending.pop(0)
                cursor = event.get("id")
            else:
                self.pending[0] = (event, used)
                cursor = None if event.get("id") is None else f"{event['id']}:{used}"
        piece = "".join(parts)
        self.length -= len(piece)
        return _text(piece, cursor)


@register_mode(GeneratorMode.CHUNKED)
async def chunked(batches: Batches, config: GeneratorConfig) -> Batches:
    cutter = _Cutter(config.chunk_size)
    async for batch in batches:
        out: Batch = []
        for event in batch:
            if event["type"] == "text-delta":
                cutter.add(event)
                out += cutter.pieces()
            else:
                out += [*cutter.pieces(flush=True), event]
        if out:
            yield out
    if rest := cutter.pieces(flush=True):
        yield rest


def _as_cursors(delivered: Batch, arrived: Batch) -> Batch:
    """Ids of a reordered batch, rewritten so each is a resume cursor: every event up to it has been delivered.

    An event that overtook others goes without an id until the ones it overtook arrive; the event that
    completes the run then carries the highest id delivered. So a client that drops mid-batch and resumes
    from its last id loses no text, though it may see an overtaking event a second time.
    """
    if delivered == arrived or any("id" not in event for event in arrived):
        return delivered
    position = {id(event): i for i, event in enumerate(arrived)}
    seen = [False] * len(arrived)
    complete = 0  # arrived[:complete] have all been delivered
    out = []
    for event in delivered:
        seen[position[id(event)]] = True
        before = complete
        while complete < len(arrived) and seen[complete]:
            complete += 1
        stripped = {key: value for key, value in event.items() if key != "id"}
        out.append(stripped | {"id": arrived[complete - 1]["id"]} if complete > before else stripped)
    return out


@register_mode(GeneratorMode.PRIORITY)
async def priority(batches: Batches, config: GeneratorConfig) -> Batches:
    """What a slow reader has waiting goes out at once, errors, tool calls and status first.

    ``finish`` overtakes nothing: it is the stream's last event, so it stays after the text it closes.
    """
    pump = _Pump(batches)
    try:
        while True:
            waiting = [await pump.get(), *pump.waiting()]
            events = [event for batch in waiting if batch is not None for event in batch]
            urgent = [e for e in events if e["type"] in PRIORITY_TYPES]
            rest = [e for e in events if e["type"] not in PRIORITY_TYPES]
            if events:
                yield _as_cursors(urgent + rest, events)
            if None in waiting:
                return
    finally:
        await pump.aclose()


async def interleave(streams: dict[str, Batches]) -> Batches:
    """Several providers' streams merged as their batches arrive, every event tagged with its ``provider``."""
    queue: asyncio.Queue[tuple[str, Batch | BaseException | None]] = asyncio.Queue(QUEUED_BATCHES)

    async def pump(provider: str, batches: Batches) -> None:
        try:
            async for batch in batches:
                await queue.put((provider, batch))
        except Exception as exc:
            await queue.put((provider, exc))
            return
        await queue.put((provider, None))  # not in a finally: a cancelled pump must not wait on a full queue

    tasks = [asyncio.create_task(pump(provider, batches)) for provider, batches in streams.items()]
    open_streams = len(tasks)
    try:
        while open_streams:
            provider, item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield [event | {"provider": provider} for event in item]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
