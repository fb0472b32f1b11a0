"""Structured output: ``response_format`` (or a Pydantic model) in, validated JSON out, on every provider."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import jsonschema
import orjson
from pydantic import BaseModel, ValidationError

from relay.errors import InvalidRequest, ProviderError
from relay.events import finish

__all__ = ["response_format_for", "output_schema", "check_response_format", "validate_output", "validated", "parse"]

M = TypeVar("M", bound=BaseModel)


def response_format_for(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI ``response_format`` for a Pydantic model; Relay translates it for other providers."""
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


def output_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema a reply must satisfy; ``{}`` for ``json_object``; None when the reply is free text."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        return (response_format or {}).get("json_schema", {}).get("schema") or {}
    return None


def check_response_format(response_format: Any) -> None:
    """Reject a malformed ``response_format`` before any upstream call."""
    if response_format is None:
        return
    if not isinstance(response_format, dict) or response_format.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise InvalidRequest(
            "response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format.type"
        )
    if response_format["type"] != "json_schema":
        return
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidRequest("response_format.json_schema.name is required", param="response_format.json_schema.name")
    try:
        jsonschema.Draft202012Validator.check_schema(spec.get("schema") or {})
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(
            f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}",
            param="response_format.json_schema.schema",
        ) from None


def validate_output(text: str, schema: dict[str, Any]) -> Any:
    """Parse and validate a reply; a provider that broke the schema is a provider failure (502)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"structured output is not valid JSON: {exc}", code="invalid_structured_output") from None
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(part) for part in errors[0].path) or "(root)"
        raise ProviderError(
            f"structured output does not match the schema at {where}: {errors[0].message}",
            code="invalid_structured_output",
        )
    return value


async def validated(events: AsyncIterator[dict[str, Any]], schema: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Pass events through; at ``finish``, check the whole text against the schema.

    A reply that breaks it ends with an ``invalid_structured_output`` error event
    and ``finish: error``, so the run is stored as failed. The text has already
    streamed by then: a stream cannot take back what it sent; a non-streamed
    reply becomes a 502 instead.
    """
    text: list[str] = []
    async with contextlib.aclosing(events):
        async for event in events:
            if event["type"] == "text-delta":
                text.append(event["content"])
            elif event["type"] == "finish" and event["reason"] == "stop":
                try:
                    validate_output("".join(text), schema)
                except ProviderError as exc:
                    yield exc.to_event()
                    yield finish("error")
                    return
            yield event


def parse(text: str, model: type[M]) -> M:
    """A reply as the Pydantic model the caller asked for."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise ProviderError(
            f"structured output does not match {model.__name__}: {exc.errors()[0]['msg']}",
            code="invalid_structured_output",
        ) from None
