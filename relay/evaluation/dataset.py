"""Evaluation datasets: JSONL or CSV rows, OpenAI Batch JSONL, Anthropic Message Batches.

A plain row holds ``messages`` (OpenAI-shaped) or a ``prompt``, plus any other
keys as template variables; ``expected`` is what scorers compare against by
default, ``system`` becomes a system message. A template (``{{var}}``)
builds the user message of rows without ``messages`` and fills the
placeholders in the string contents of rows with them.

The batch formats carry their own request bodies: OpenAI's ``{custom_id,
method, url, body}`` lines and Anthropic's ``{custom_id, params}`` requests
(JSONL, or the ``{"requests": [...]}`` body of a batch create call). Their
``model`` is left to the evaluation's providers; the sampling parameters are
kept.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from relay.errors import RelayError
from relay.http.schemas import ChatCompletionBody, parse_body
from relay.wire.anthropic import from_anthropic_messages, from_anthropic_params

__all__ = ["Row", "DatasetError", "load_dataset", "parse_rows", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")


class DatasetError(ValueError):
    """A row that cannot become a request; the message names the row and the field."""


@dataclass(slots=True)
class Row:
    id: str
    messages: list[dict[str, Any]]
    vars: dict[str, Any] = field(default_factory=dict)
    expected: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The last user message's text: what reports show as the row's input."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                return " ".join(p.get("text", "") for p in content or () if p.get("type") == "text")
        return ""


def render(template: str, variables: Mapping[str, Any], where: str) -> str:
    """``{{name}}`` replaced by the variable's value; an unknown name is an error, not an empty string."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise DatasetError(f"{where}: template variable '{name}' is not in the row (it has: {known})")
        found = variables[name]
        return found if isinstance(found, str) else orjson.dumps(found).decode()

    return _PLACEHOLDER.sub(value, template)


def _plain_row(raw: dict[str, Any], index: int, template: str | None, where: str) -> Row:
    variables = {key: value for key, value in raw.items() if key not in ("messages", "params")}
    messages = raw.get("messages")
    if isinstance(messages, str):
        try:
            messages = orjson.loads(messages)
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{where}: 'messages' is not valid JSON ({exc})") from None
    if messages is not None:
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise DatasetError(f"{where}: 'messages' must be a non-empty list of message objects")
        messages = [
            m | {"content": render(m["content"], variables, f"{where} messages[{i}]")}
            if isinstance(m.get("content"), str)
            else m
            for i, m in enumerate(messages)
        ]
    elif template is not None:
        messages = [{"role": "user", "content": render(template, variables, where)}]
    elif isinstance(raw.get("prompt"), str):
        messages = [{"role": "user", "content": raw["prompt"]}]
    else:
        raise DatasetError(f"{where}: a row needs 'messages' or 'prompt' (or the evaluation a template)")
    if raw.get("system") and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": str(raw["system"])}, *messages]
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise DatasetError(f"{where}: 'params' must be an object")
    return Row(_row_id(raw, index), messages, variables, raw.get("expected"), params)


def _row_id(raw: dict[str, Any], index: int) -> str:
    value = raw.get("id", raw.get("custom_id"))
    return str(value) if value not in (None, "") else f"row-{index + 1}"


def _openai_batch_row(raw: dict[str, Any], index: int, where: str) -> Row:
    body = raw.get("body")
    if not isinstance(body, dict):
        raise DatasetError(f"{where}: an OpenAI batch line needs a 'body' object")
    try:
        parsed = parse_body(ChatCompletionBody, body | {"model": body.get("model") or "-"})
    except RelayError as exc:
        raise DatasetError(f"{where}: body: {exc.message}") from None
    return Row(_row_id(raw, index), parsed.message_dicts(), {}, raw.get("expected"), parsed.params())


def _anthropic_batch_row(raw: dict[str, Any], index: int, where: str) -> Row:
    params = raw.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("messages"), list):
        raise DatasetError(f"{where}: an Anthropic batch request needs 'params' with 'messages'")
    if not isinstance(params.get("max_tokens"), int):
        raise DatasetError(f"{where}: params.max_tokens is required (an integer), as the Messages API requires it")
    try:
        messages = from_anthropic_messages(params.get("system"), params["messages"])
    except RelayError as exc:
        raise DatasetError(f"{where}: params.{exc.param or 'messages'}: {exc.message}") from None
    return Row(_row_id(raw, index), messages, {}, raw.get("expected"), from_anthropic_params(params))


def parse_rows(raws: Iterable[dict[str, Any]], template: str | None = None, source: str = "dataset") -> list[Row]:
    """Rows from parsed records of any supported shape; ids must be unique, as they key the results."""
    rows: list[Row] = []
    seen: set[str] = set()
    for index, raw in enumerate(raws):
        where = f"{source} row {index + 1}"
        if not isinstance(raw, dict):
            raise DatasetError(f"{where}: expected a JSON object")
        if "custom_id" in raw and "body" in raw:
            row = _openai_batch_row(raw, index, where)
        elif "custom_id" in raw and "params" in raw and isinstance(raw["params"], dict) and "messages" in raw["params"]:
            row = _anthropic_batch_row(raw, index, where)
        else:
            row = _plain_row(raw, index, template, where)
        if row.id in seen:
            raise DatasetError(f"{where}: duplicate row id '{row.id}'; ids key the stored results")
        seen.add(row.id)
        rows.append(row)
    if not rows:
        raise DatasetError(f"{source}: no rows")
    return rows


def _jsonl(path: Path) -> list[Any]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path.name} line {number}: invalid JSON ({exc})") from None
    return records


def load_dataset(path: str | Path, template: str | None = None) -> list[Row]:
    """Rows from a ``.jsonl``, ``.csv`` or ``.json`` file (a list of rows, or an Anthropic batch body)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            records: list[Any] = [
                {key: value for key, value in row.items() if value != ""} for row in csv.DictReader(handle)
            ]
    elif suffix == ".json":
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise DatasetError(f"{path.name}: invalid JSON ({exc})") from None
        records = document.get("requests", []) if isinstance(document, dict) else document
        if not isinstance(records, list):
            raise DatasetError(f"{path.name}: expected a list of rows or an object with 'requests'")
    else:
        records = _jsonl(path)
    return parse_rows(records, template, path.name)
