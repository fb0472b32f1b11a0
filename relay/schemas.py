"""Pydantic models for HTTP bodies, and their conversion to a ``ChatRequest``.

Validation errors become an ``InvalidRequest`` naming the field, e.g.
``messages[0].role``, so that clients see what to fix.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidRequest
from .request import ChatRequest

__all__ = [
    "ChatMessage",
    "ChatCompletionBody",
    "StreamingChatBody",
    "RegisterProviderBody",
    "parse_body",
    "validation_error",
    "to_chat_request",
]

M = TypeVar("M", bound=BaseModel)
Role = Literal["system", "developer", "user", "assistant", "tool"]
# Sampling and tool parameters passed through to the provider unchanged.
PASSTHROUGH = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "logit_bias",
)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _parts_have_type(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                if "type" not in part:
                    raise ValueError("each content part needs a 'type'")
        return value


class _ChatBase(BaseModel):
    model_config = ConfigDict(extra="allow")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = None
    provider_options: dict[str, Any] = Field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        extra = self.model_extra or {}
        params = {key: extra[key] for key in PASSTHROUGH if key in extra}
        params["temperature"] = self.temperature
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens:
            params["max_tokens"] = max_tokens
        return {key: value for key, value in params.items() if value is not None}

    def message_dicts(self) -> list[dict[str, Any]]:
        return [message.model_dump(exclude_none=True) for message in self.messages]


class ChatCompletionBody(_ChatBase):
    """``POST /v1/chat/completions``, as the OpenAI SDK sends it."""

    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("stream_options")
    @classmethod
    def _options_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("include_usage", False), bool):
            raise ValueError("include_usage must be a boolean")
        return value


class StreamingChatBody(_ChatBase):
    """``POST /api/streaming/chat``, the seed's streaming route."""

    provider_id: str | None = None
    model: str | None = None
    stream_format: Literal["sse", "ndjson", "json"] = "sse"
    session_id: str | None = None
    user_id: str | None = None


class RegisterProviderBody(BaseModel):
    """``POST /api/streaming/providers/register``; the key is kept in memory only."""

    model_config = ConfigDict(extra="forbid")
    provider_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider_type: Literal["openai", "openai_compatible", "echo"]
    model_name: str | None = None
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    num_replicas: int = Field(default=1, ge=1, le=64)
    max_ongoing_requests: int = Field(default=256, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = _loc(tuple(part for part in first["loc"] if not str(part).startswith("function-")))
    message = first["msg"]
    if first["type"] == "missing":
        message = f"'{param}' is required"
    elif first["type"] == "literal_error" and param.endswith("role"):
        message = f"unknown role {first['input']!r}; {first['msg'].lower()}"
    elif first["type"] == "too_short" and param == "messages":
        message = "'messages' must contain at least one message"
    return InvalidRequest(f"Invalid '{param}': {message}" if first["type"] != "missing" else message, param=param)


def parse_body(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object", param=None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def to_chat_request(body: _ChatBase, *, provider: str, model: str | None) -> ChatRequest:
    return ChatRequest(
        provider=provider,
        model=model,
        messages=body.message_dicts(),
        params=body.params(),
        provider_options=body.provider_options,
        user=body.user,
    )
