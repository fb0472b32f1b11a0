"""A tool is a typed Python function; its JSON schema comes from its signature and docstring.

Pydantic builds the schema (``create_model`` over the parameters) and later
validates the model's arguments against the same model, so what the model is
told and what the function accepts never drift apart. Parameter descriptions
come from the docstring's ``Args:`` section (Google style) or ``:param x:``
lines (Sphinx style); the text before them describes the tool.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = ["Tool", "ToolSet", "tool", "tool_from_function", "arguments_model", "TOOL_NAME"]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI and Anthropic both accept as a function name
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$")
_GOOGLE_ARG = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")


@dataclass(frozen=True, slots=True, eq=False)
class Tool:
    """One server-side tool. It pickles by reference to its function, so it travels to a session actor."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    timeout_s: float = 10.0
    max_output_chars: int = 16_384

    def schema(self) -> dict[str, Any]:
        """The Chat Completions ``tools`` entry the model sees."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True, slots=True)
class ToolSet:
    """The server-side tools one turn may call, and how many model calls the turn may make."""

    tools: tuple[Tool, ...] = ()
    max_steps: int = 8

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tools)

    def get(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def __bool__(self) -> bool:
        return bool(self.tools)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools]


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    max_output_chars: int | None = None,
) -> Any:
    """Marks a function with its tool options (usable bare, ``@tool``, or with options); it stays callable as is."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        options = {"name": name, "timeout_s": timeout_s, "max_output_chars": max_output_chars}
        fn.__relay_tool__ = {k: v for k, v in options.items() if v is not None}  # type: ignore[attr-defined]
        return fn

    return mark(function) if function is not None else mark


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(the description, parameter descriptions) from a docstring."""
    doc = inspect.getdoc(fn) or ""
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        heading = _SECTION.match(line)
        sphinx = _SPHINX_ARG.match(line)
        if heading:
            section, current = heading[1], None
        elif sphinx:
            current = sphinx[1]
            params[current] = sphinx[2].strip()
            section = "Args"
        elif section in ("Args", "Arguments", "Parameters") and (arg := _GOOGLE_ARG.match(line)):
            current = arg[1].lstrip("*")
            params[current] = arg[2].strip()
        elif current and line.strip() and section in ("Args", "Arguments", "Parameters"):
            params[current] = f"{params[current]} {line.strip()}".strip()
        elif section is None and not line.startswith(":"):
            description.append(line)
    return "\n".join(description).strip(), params


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


@functools.cache
def arguments_model(function: Callable[..., Any]) -> type[BaseModel]:
    """A Pydantic model of ``function``'s parameters: the schema and the validator (built once per process)."""
    signature = inspect.signature(function)
    hints = get_type_hints(function, include_extras=True)
    _, described = _doc_parts(function)
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise TypeError(f"tool {function.__name__}: parameter '{parameter.name}' must be passable by keyword")
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, Field(default, description=described.get(parameter.name)))
    return create_model(f"{function.__name__}_arguments", __base__=_Arguments, **fields)


def _tidy(schema: dict[str, Any]) -> dict[str, Any]:
    """Drops Pydantic's generated titles: noise in every prompt that carries the schema."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    for definition in schema.get("$defs", {}).values():
        _tidy(definition)
    return schema


def tool_from_function(
    function: Callable[..., Any], *, timeout_s: float = 10.0, max_output_chars: int = 16_384
) -> Tool:
    """A ``Tool`` from a typed function; options set with ``@tool`` win over these defaults."""
    if not callable(function):
        raise TypeError(f"{function!r} is not a function")
    options = getattr(function, "__relay_tool__", {})
    name = options.get("name") or function.__name__
    if not TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r}: use 1-64 letters, digits, _ or -")
    description, _ = _doc_parts(function)
    parameters = _tidy(arguments_model(function).model_json_schema())
    built = Tool(name, description or name, parameters, function, timeout_s, max_output_chars)
    overrides = {key: options[key] for key in ("timeout_s", "max_output_chars") if key in options}
    return replace(built, **overrides) if overrides else built
