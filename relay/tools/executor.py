"""Runs one tool call: arguments validated, awaited with a timeout, output capped, every failure caught.

Whatever a tool does (raise, hang, return megabytes), the outcome is a value:
a ``result`` or an ``error`` the model is told about. Only cancellation (the
caller stopped the run) propagates. A synchronous tool runs in a worker thread
so that it cannot block the session's event loop; a thread cannot be killed, so
a synchronous tool that hangs keeps its thread after its timeout (write tools
that can hang as ``async def``, which are cancelled).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from relay.tools.schema import Tool, arguments_model

__all__ = ["ToolOutcome", "execute", "MAX_ERROR_CHARS"]

MAX_ERROR_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    result: str | None
    error: str | None
    duration_ms: float

    def for_model(self) -> str:
        """What the model reads in the tool message."""
        return self.result if self.error is None and self.result is not None else f"Error: {self.error}"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(to_jsonable_python(value, fallback=str)).decode()


def _arguments(tool: Tool, raw: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the arguments are not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError("the arguments must be a JSON object")
    try:
        model = arguments_model(tool.function).model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        raise ValueError(f"invalid argument '{where}': {first['msg']}") from None
    return {name: getattr(model, name) for name in type(model).model_fields}


class ToolExit(Exception):
    """A tool called ``sys.exit()``: as a SystemExit it would stop the event loop, and the session with it."""


async def _call(tool: Tool, kwargs: dict[str, Any]) -> Any:
    try:
        if inspect.iscoroutinefunction(tool.function):
            return await tool.function(**kwargs)
        result = await asyncio.to_thread(functools.partial(tool.function, **kwargs))
        return await result if inspect.isawaitable(result) else result
    except SystemExit as exc:
        raise ToolExit(f"the tool called sys.exit({exc.code!r})") from None


def _capped(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "…"


async def execute(tool: Tool, arguments: str) -> ToolOutcome:
    started = time.perf_counter()

    def outcome(result: str | None = None, error: str | None = None) -> ToolOutcome:
        return ToolOutcome(result, error, round((time.perf_counter() - started) * 1000, 2))

    try:
        kwargs = _arguments(tool, arguments)
    except ValueError as exc:
        return outcome(error=_capped(str(exc)))
    try:
        value = await asyncio.wait_for(_call(tool, kwargs), timeout=tool.timeout_s)
        text = _text(value)
    except TimeoutError:
        return outcome(error=f"the tool timed out after {tool.timeout_s:g} s")
    except Exception as exc:
        return outcome(error=_capped(f"{type(exc).__name__}: {exc}"))
    if len(text) > tool.max_output_chars:
        return outcome(
            error=f"the tool's output is {len(text):,} characters, over the limit of {tool.max_output_chars:,}"
        )
    return outcome(result=text)
