"""Scorers: each turns a reply into a ``Score`` (a number, pass or fail, and the reason).

Values compared against default to the row's ``expected`` and may use the
row's variables (``contains:{{city}}``). A Python callable scores too: it gets
``(output, row)`` and returns a bool, a number in [0, 1] (pass at 0.5), a
``(passed, reason)`` pair, a dict ``{score, pass, reason}`` or a ``Score``.
The ``llm-judge`` scorer lives in ``judge``: it needs a provider call.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import orjson

from relay.evaluation.dataset import Row, render

__all__ = [
    "Score",
    "Scorer",
    "Equals",
    "Contains",
    "Regex",
    "JsonValid",
    "JsonSchema",
    "PythonScorer",
    "load_callable",
]


@dataclass(slots=True)
class Score:
    name: str
    score: float
    passed: bool
    reason: str
    cost: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scorer:
    """``spec`` names the scorer and its settings: a change of spec re-scores stored replies."""

    kind: ClassVar[str] = "scorer"
    needs_provider: ClassVar[bool] = False

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.kind

    def score(self, output: str, row: Row) -> Score:
        raise NotImplementedError


def _expected(value: str | None, row: Row, kind: str) -> str:
    if value is not None:
        return render(value, row.vars, f"{kind} on row {row.id}")
    if row.expected is None:
        raise ValueError(f"row {row.id} has no 'expected' for {kind} to compare with")
    return str(row.expected)


class Equals(Scorer):
    """The reply, stripped of surrounding whitespace, equals the expected text."""

    kind = "equals"

    def __init__(self, value: str | None = None) -> None:
        super().__init__(self.kind if value is None else f"{self.kind}:{value}")
        self.value = value

    def score(self, output: str, row: Row) -> Score:
        expected = _expected(self.value, row, self.kind).strip()
        passed = output.strip() == expected
        reason = "matches" if passed else f"expected {expected[:80]!r}, got {output.strip()[:80]!r}"
        return Score(self.name, float(passed), passed, reason)


class Contains(Scorer):
    kind = "contains"

    def __init__(self, value: str | None = None, *, ignore_case: bool = False) -> None:
        kind = "icontains" if ignore_case else self.kind
        super().__init__(kind if value is None else f"{kind}:{value}")
        self.value = value
        self.ignore_case = ignore_case

    @property
    def name(self) -> str:
        return "icontains" if self.ignore_case else self.kind

    def score(self, output: str, row: Row) -> Score:
        needle = _expected(self.value, row, self.name)
        haystack = output.lower() if self.ignore_case else output
        passed = (needle.lower() if self.ignore_case else needle) in haystack
        return Score(self.name, float(passed), passed, f"{'contains' if passed else 'lacks'} {needle[:80]!r}")


class Regex(Scorer):
    kind = "regex"

    def __init__(self, pattern: str) -> None:
        super().__init__(f"{self.kind}:{pattern}")
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex scorer: bad pattern {pattern!r}: {exc}") from None

    def score(self, output: str, row: Row) -> Score:
        match = self.pattern.search(output)
        reason = f"matched {match[0][:80]!r}" if match else f"no match for /{self.pattern.pattern}/"
        return Score(self.name, float(bool(match)), bool(match), reason)


def _strip_fence(output: str) -> str:
    """Models often wrap JSON in a Markdown code fence; the JSON inside is what is scored."""
    text = output.strip()
    fenced = re.fullmatch(r"```[\w-]*\s*\n(.*?)\n?```", text, re.DOTALL)
    return fenced[1] if fenced else text


class JsonValid(Scorer):
    kind = "json-valid"

    def __init__(self) -> None:
        super().__init__(self.kind)

    def score(self, output: str, row: Row) -> Score:
        try:
            orjson.loads(_strip_fence(output))
        except orjson.JSONDecodeError as exc:
            return Score(self.name, 0.0, False, f"not JSON: {exc}")
        return Score(self.name, 1.0, True, "valid JSON")


class JsonSchema(Scorer):
    kind = "json-schema"

    def __init__(self, schema: dict[str, Any], source: str | None = None) -> None:
        super().__init__(f"{self.kind}:{source or orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()}")
        jsonschema.Draft202012Validator.check_schema(schema)
        self.validator = jsonschema.Draft202012Validator(schema)

    @classmethod
    def parse(cls, argument: str) -> JsonSchema:
        """Inline JSON, or the path of a JSON file."""
        text = argument if argument.lstrip().startswith("{") else Path(argument).read_text()
        try:
            schema = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"json-schema scorer: the schema is not JSON ({exc})") from None
        return cls(schema, argument)

    def score(self, output: str, row: Row) -> Score:
        try:
            document = orjson.loads(_strip_fence(output))
        except orjson.JSONDecodeError as exc:
            return Score(self.name, 0.0, False, f"not JSON: {exc}")
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(document))
        if error is None:
            return Score(self.name, 1.0, True, "matches the schema")
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        return Score(self.name, 0.0, False, f"{where}: {error.message}")


def load_callable(target: str) -> Callable[..., Any]:
    """``package.module:function`` or ``path/to/file.py:function``."""
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise ValueError(f"python scorer {target!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    if module_name.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        if spec is None or spec.loader is None:
            raise ValueError(f"python scorer: cannot load {module_name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"python scorer: {module_name} has no callable {attribute!r}")
    return function


class PythonScorer(Scorer):
    kind = "python"

    def __init__(self, function: Callable[[str, Row], Any], name: str | None = None) -> None:
        qualified = f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', repr(function))}"
        super().__init__(f"{self.kind}:{qualified}")
        self.function = function
        self._name = name or getattr(function, "__name__", self.kind)

    @property
    def name(self) -> str:
        return self._name

    def score(self, output: str, row: Row) -> Score:
        result = self.function(output, row)
        if isinstance(result, Score):
            return result
        if isinstance(result, bool):
            return Score(self.name, float(result), result, "returned True" if result else "returned False")
        if isinstance(result, int | float):
            value = float(result)
            return Score(self.name, value, value >= 0.5, f"scored {value:g}")
        if isinstance(result, tuple) and len(result) == 2:
            passed, reason = bool(result[0]), str(result[1])
            return Score(self.name, float(passed), passed, reason)
        if isinstance(result, dict) and ("pass" in result or "score" in result):
            score = float(result.get("score", float(bool(result.get("pass")))))
            passed = bool(result["pass"]) if "pass" in result else score >= 0.5
            return Score(self.name, score, passed, str(result.get("reason", "")))
        raise TypeError(f"python scorer {self.name} returned {type(result).__name__}; see relay.evaluation.scoring")
