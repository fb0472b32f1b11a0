"""The two tools Relay ships: ``current_time`` and a safe ``calculator``.

The calculator never calls ``eval``: it parses the expression with ``ast`` and
walks a whitelist of number literals, arithmetic operators and a few math
functions. Exponents and lengths are bounded so that no expression can make it
compute for long or build a huge integer.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BUILTIN_TOOLS", "calculator", "current_time", "evaluate"]

MAX_EXPRESSION_CHARS = 500
MAX_RESULT_BITS = 4_096  # integers beyond ~1,233 decimal digits are refused before they are computed

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _power(base: Any, exponent: Any) -> Any:
    integers = isinstance(base, int) and isinstance(exponent, int)
    if integers and exponent > 0 and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
        raise ValueError(f"{base} ** {exponent} is too large to compute")
    return base**exponent


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > MAX_RESULT_BITS:
            raise ValueError("the result is too large")
        return result
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords:
            raise ValueError(f"{node.func.id}() takes no keyword arguments")
        return _FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args))
    raise ValueError(f"unsupported syntax: {ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__}")


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, or ``ValueError`` naming what is not allowed."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    value = _eval(tree)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is not a finite number")
    return value


def calculator(expression: str) -> int | float:
    """Evaluate an arithmetic expression exactly as written.

    Supports + - * / // % ** and parentheses, the constants pi, e and tau, and
    abs, round, min, max, sqrt, exp, log, log10, sin, cos, tan, floor and ceil.

    Args:
        expression: The expression, e.g. "2 + 3 * 4" or "sqrt(2) / 2".
    """
    return evaluate(expression)


def current_time(timezone: str = "UTC") -> str:
    """The current date and time, as ISO 8601 with its UTC offset.

    Args:
        timezone: An IANA time zone name, e.g. "Europe/Paris" or "America/New_York".
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None
    return datetime.now(zone).isoformat(timespec="seconds")


BUILTIN_TOOLS: tuple[Callable[..., Any], ...] = (current_time, calculator)
