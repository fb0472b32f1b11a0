"""Server-side tools: typed Python functions the session runs when the model calls them.

``schema`` turns a function into a ``Tool`` (JSON schema from its signature
and docstring), ``registry`` gathers them (built-ins, config, the
``relay.tools`` entry points), ``executor`` runs one call safely, and
``relay.session.steps`` drives the model ↔ tools loop of a run.
"""

from __future__ import annotations

from relay.config import ToolSettings
from relay.tools.builtin import calculator, current_time
from relay.tools.executor import ToolOutcome, execute
from relay.tools.registry import ENTRY_POINT_GROUP, ToolRegistry
from relay.tools.schema import Tool, ToolSet, tool, tool_from_function

__all__ = [
    "ENTRY_POINT_GROUP",
    "Tool",
    "ToolOutcome",
    "ToolRegistry",
    "ToolSet",
    "ToolSettings",
    "calculator",
    "current_time",
    "execute",
    "tool",
    "tool_from_function",
]
