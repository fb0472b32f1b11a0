"""Pydantic models for HTTP bodies, and their conversion to a ``ChatRequest``.

Validation errors become an ``InvalidRequest`` naming the field, e.g.
``messages[0].role``, so that clients see what to fix.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from relay.config import ProviderConfig
from relay.errors import InvalidRequest
from relay.modes import GeneratorConfig
from relay.providers.media import MediaPolicy, normalize_messages
from relay.providers.structured import check_response_format
from relay.request import ChatRequest

__all__ = [
    "ChatMessage",
    "ChatCompletionBody",
    "StreamingChatBody",
    "RegisterProviderBody",
    "MessagesBody",
    "AnthropicBlock",
    "AnthropicMessage",
    "parse_body",
    "validation_error",
    "to_chat_request",
    "SESSION_ID_PATTERN",
]

M = TypeVar("M", bound=BaseModel)
SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
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
    "reasoning_effort",
    "logit_bias",
    "top_k",
    "thinking",
)
# Chat Completions fields that Relay knows and does not forward; any other unknown field is a 400.
OPENAI_IGNORED = (
    "logprobs",
    "top_logprobs",
    "store",
    "metadata",
    "service_tier",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
)
# Far above any model's output limit, and still a 64-bit integer for every SDK and store.
MAX_TOKENS = 1_000_000
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # RFC 9110's token
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


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
    # Undeclared top-level fields this route takes (the passthrough parameters); any other is refused.
    accepted_extra: ClassVar[frozenset[str]] = frozenset(PASSTHROUGH)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = None
    provider_options: dict[str, Any] = Field(default_factory=dict)
    # Providers (or models) tried in order when the chosen one fails before its first token.
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    # False: this turn neither reads nor feeds the user's cross-session memory.
    memory: bool = True
    response_format: dict[str, Any] | None = None
    # Server-side tools this turn may run, by name (relay.tools); absent: the session's default, else the server's.
    relay_tools: list[str] | None = Field(default=None, max_length=64)
    # True: the OpenAI-compatible reply also carries Relay's own tool events (``relay_event`` chunks).
    relay_events: bool = False

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        check_response_format(value)
        return value

    def params(self) -> dict[str, Any]:
        extra = self.model_extra or {}
        params = {key: extra[key] for key in PASSTHROUGH if key in extra}
        params["temperature"] = self.temperature
        params["response_format"] = self.response_format
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens:
            params["max_tokens"] = max_tokens
        return {key: value for key, value in params.items() if value is not None}

    def message_dicts(self) -> list[dict[str, Any]]:
        return [message.model_dump(exclude_none=True) for message in self.messages]


class ChatCompletionBody(_ChatBase):
    """``POST /v1/chat/completions``, as the OpenAI SDK sends it."""

    accepted_extra = frozenset((*PASSTHROUGH, *OPENAI_IGNORED))
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
    stream_format: Literal["sse", "ndjson", "text", "json"] = "sse"
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    user_id: str | None = None
    # The seed's generator modes; ``interleaved`` sends the request to every provider in ``provider_ids``.
    generator_mode: str = "standard"
    buffer_size: int = Field(default=256, ge=1, le=1 << 20)
    flush_interval: float = Field(default=0.1, gt=0, le=10)
    chunk_size: int = Field(default=16, ge=1, le=1 << 16)
    provider_ids: list[str] = Field(default_factory=list, max_length=8)
    # True: a dropped connection does not cancel the run; resume it from GET /api/streaming/runs/{run_id}/events.
    resumable: bool = False

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(
            mode=self.generator_mode,
            buffer_size=self.buffer_size,
            flush_interval=self.flush_interval,
            chunk_size=self.chunk_size,
        )


class AnthropicBlock(BaseModel):
    """One content block; the fields each type needs are checked here, the rest is read by ``relay.wire``."""

    model_config = ConfigDict(extra="allow")
    _NEEDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "text": ("text",),
        "tool_use": ("id", "name"),
        "tool_result": ("tool_use_id",),
        "thinking": ("thinking",),
    }
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    tool_use_id: str = ""
    thinking: str = ""
    title: str | None = None
    source: dict[str, Any] | None = None
    content: str | list[AnthropicBlock] | None = None

    @model_validator(mode="after")
    def _has_what_its_type_needs(self) -> Self:
        for field in self._NEEDS.get(self.type, ()):
            if field not in self.model_fields_set:
                raise ValueError(f"a {self.type} block needs '{field}'")
        return self


class AnthropicMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["auto", "any", "none", "tool"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class MessagesBody(BaseModel):
    """``POST /v1/messages``, as the Anthropic SDK sends it; the rest is read by ``relay.wire.anthropic``.

    Read it through ``model_dump(exclude_unset=True)``: blocks then carry only what the caller sent.
    """

    model_config = ConfigDict(extra="allow")
    accepted_extra: ClassVar[frozenset[str]] = frozenset(("thinking", "service_tier"))
    model: str
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicBlock] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None


class RegisterProviderBody(BaseModel):
    """``POST /api/streaming/providers/register``: the seed's fields plus every ``ProviderConfig`` option.

    The key is sealed before it is stored and never returned.
    """

    model_config = ConfigDict(extra="forbid")
    provider_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider_type: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    model_name: str | None = None
    models: list[str] = Field(default_factory=list)
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    organization: str | None = None
    deployment: str | None = None
    api_version: str | None = None
    timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    default_headers: dict[str, str] = Field(default_factory=dict)
    fallbacks: list[str] = Field(default_factory=list)
    features: list[str] | None = None
    default_max_tokens: int = Field(default=4096, ge=1)
    # Any of these three gives the provider a pool of its own; without them it joins the shared pool.
    dedicated: bool = False
    num_replicas: int | None = Field(default=None, ge=1, le=64)
    actor_resources: dict[str, float] = Field(default_factory=dict)
    max_ongoing_requests: int = Field(default=256, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("default_headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(text):
                raise ValueError(f"header {name[:64]!r} needs a token name and a printable ASCII value")
        return value

    def to_config(self) -> ProviderConfig:
        fields = self.model_dump(exclude={"model_name"}, exclude_none=True)
        return ProviderConfig.model_validate(fields | {"model": self.model_name})


# Pydantic names the branch of a union (``content.str``) in an error's location: the caller's field has no such part.
_UNION_BRANCH = re.compile(r"^(str|int|float|bool|none|dict|list)$|\[")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and _UNION_BRANCH.search(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: ValidationError) -> InvalidRequest:
    # The deepest error is the most specific: for a union field, the branch that came closest rather than the first.
    first = max(exc.errors(), key=lambda error: len(error["loc"]))
    param = _loc(tuple(part for part in first["loc"] if not str(part).startswith("function-")))
    message = first["msg"]
    if not param:
        return InvalidRequest(f"Invalid request: {message}")
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
        body = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    accepted: frozenset[str] = getattr(model, "accepted_extra", frozenset())
    unknown = next((key for key in body.model_extra or () if key not in accepted), None)
    if unknown is not None:
        raise InvalidRequest(f"Unknown field '{unknown}'", param=unknown)
    return body


def to_chat_request(body: _ChatBase, *, provider: str, model: str | None, media: MediaPolicy) -> ChatRequest:
    return ChatRequest(
        provider=provider,
        model=model,
        messages=normalize_messages(body.message_dicts(), media),
        params=body.params(),
        provider_options=body.provider_options,
        user=body.user,
        memory=body.memory,
    )
