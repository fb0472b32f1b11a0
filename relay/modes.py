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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidRequest

__all__ = [
    "GeneratorMode",
    "GeneratorConfig",
    "GENERATOR_MODES",
    "register_mode",
    "apply_mode",
    "check_mode",
    "interleave",
]

Batch = list[dict[str, Any]]
Batches = AsyncIterator[Batch]
Mode = Callable[[Batches, "GeneratorConfig"], Batches]
PRIORITY_TYPES = frozenset({"error", "status", "tool-call-start", "tool-call-delta", "tool-call-end"})


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


class _Pump:
    """Reads a stream from a task, so the reader can wait with a timeout without cancelling the stream itself."""

    def __init__(self, batches: Batches) -> None:
        self.queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()
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
                    deadline = deadline or loop.time() + config.flush_interval
                    continue
                if text:
                    out.append({"type": "text-delta", "content": "".join(text)})
                    text, size, deadline = [], 0, None
                out.append(event)
            if text and (batch is None or size >= config.buffer_size or loop.time() >= (deadline or 0)):
                out.append({"type": "text-delta", "content": "".join(text)})
                text, size, deadline = [], 0, None
            if out:
                yield out
            if batch is None:
                return
    finally:
        await pump.aclose()


@register_mode(GeneratorMode.CHUNKED)
async def chunked(batches: Batches, config: GeneratorConfig) -> Batches:
    pending = ""
    async for batch in batches:
        out: Batch = []
        for event in batch:
            if event["type"] == "text-delta":
                pending += event["content"]
                while len(pending) >= config.chunk_size:
                    out.append({"type": "text-delta", "content": pending[: config.chunk_size]})
                    pending = pending[config.chunk_size :]
                continue
            if pending:
                out.append({"type": "text-delta", "content": pending})
                pending = ""
            out.append(event)
        if out:
            yield out
    if pending:
        yield [{"type": "text-delta", "content": pending}]


@register_mode(GeneratorMode.PRIORITY)
async def priority(batches: Batches, config: GeneratorConfig) -> Batches:
    """What a slow reader has waiting goes out at once: errors, tool calls and status first, ``finish`` last."""
    pump = _Pump(batches)
    try:
        while True:
            waiting = [await pump.get(), *pump.waiting()]
            events = [event for batch in waiting if batch is not None for event in batch]
            urgent = [e for e in events if e["type"] in PRIORITY_TYPES]
            finishes = [e for e in events if e["type"] == "finish"]
            rest = [e for e in events if e["type"] not in PRIORITY_TYPES and e["type"] != "finish"]
            if events:
                yield urgent + rest + finishes
            if None in waiting:
                return
    finally:
        await pump.aclose()


async def interleave(streams: dict[str, Batches]) -> Batches:
    """Several providers' streams merged as their batches arrive, every event tagged with its ``provider``."""
    queue: asyncio.Queue[tuple[str, Batch | BaseException | None]] = asyncio.Queue()

    async def pump(provider: str, batches: Batches) -> None:
        try:
            async for batch in batches:
                await queue.put((provider, batch))
        except Exception as exc:
            await queue.put((provider, exc))
        finally:
            await queue.put((provider, None))

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
