"""Where tools come from: the built-ins, ``functions`` named in config, and the ``relay.tools`` entry point group.

An entry point names a function, or a list of functions; installing a package
that declares one is how a plugin adds tools::

    [project.entry-points."relay.tools"]
    weather = "acme_tools:get_weather"

A request or a session then enables tools by name; nothing runs that was not
enabled. A tool named in config that cannot be loaded stops the server from
starting; a broken plugin is logged and skipped, so one bad package cannot take
the others down.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from relay.config import ToolSettings
from relay.errors import InvalidRequest
from relay.tools.builtin import BUILTIN_TOOLS
from relay.tools.schema import Tool, ToolSet, tool_from_function

__all__ = ["ENTRY_POINT_GROUP", "ToolRegistry", "load_function"]

log = logging.getLogger("relay.tools")

ENTRY_POINT_GROUP = "relay.tools"


def load_function(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{target!r}: use 'package.module:function'")
    value: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def _functions(value: Any) -> Iterable[Callable[..., Any]]:
    return value if isinstance(value, list | tuple) else [value]


class ToolRegistry:
    def __init__(self, settings: ToolSettings | None = None) -> None:
        self.settings = settings or ToolSettings()
        self.tools: dict[str, Tool] = {}
        if self.settings.builtin:
            for function in BUILTIN_TOOLS:
                self.add(function)
        if self.settings.entry_points:
            self._load_entry_points()
        for target in self.settings.functions:
            for function in _functions(load_function(target)):
                self.add(function)
        unknown = next((name for name in self.settings.enabled if name not in self.tools), None)
        if unknown is not None:
            raise ValueError(f"tools.enabled names '{unknown}', which no builtin, function or plugin provides")

    def add(self, function: Callable[..., Any]) -> Tool:
        """Register a typed function; a later tool of the same name replaces an earlier one (config wins)."""
        built = tool_from_function(
            function, timeout_s=self.settings.timeout_s, max_output_chars=self.settings.max_output_chars
        )
        self.tools[built.name] = built
        return built

    def _load_entry_points(self) -> None:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                for function in _functions(entry.load()):
                    self.add(function)
            except Exception:
                log.exception("the tool plugin %s (%s) could not be loaded; skipped", entry.name, entry.value)

    def select(self, names: list[str] | None, param: str = "relay_tools") -> ToolSet | None:
        """The enabled set for a turn: ``names`` (None: the configured default); a 400 names an unknown tool."""
        chosen = self.settings.enabled if names is None else names
        tools = []
        for i, name in enumerate(chosen):
            if name not in self.tools:
                known = ", ".join(sorted(self.tools)) or "none"
                raise InvalidRequest(f"Unknown tool '{name}'; registered tools: {known}", param=f"{param}[{i}]")
            if self.tools[name] not in tools:
                tools.append(self.tools[name])
        return ToolSet(tuple(tools), self.settings.max_steps) if tools else None
