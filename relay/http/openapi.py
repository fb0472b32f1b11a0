"""``GET /openapi.json``: the HTTP surface as OpenAPI 3.1, built from the route list and the Pydantic bodies.

Every ``Route`` of the app has an entry in ``OPERATIONS`` (a test holds the two
together); a route without one is still published, with its path as its summary
and no body or error schema, so a new route never breaks startup. Request bodies
come from the same Pydantic models that validate them. A body that takes named
extra fields (``accepted_extra``) is published with those fields and no others,
as ``parse_body`` refuses any other. The WebSocket route is described in
``info.description``: OpenAPI has no WebSocket operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from relay.http.conversations_api import AddItemsBody, CreateConversationBody, UpdateConversationBody
from relay.http.schemas import ChatCompletionBody, MessagesBody, RegisterProviderBody, StreamingChatBody
from relay.http.sessions_api import CreateSessionBody, PatchSessionBody
from relay.http.spend_api import KeyBudgetBody
from relay.wire.responses_input import ResponsesBody

__all__ = ["OPERATIONS", "Operation", "openapi_route", "openapi_spec"]

_REF = "#/components/schemas/{model}"
_JSON = "application/json"
_SSE = "text/event-stream"
_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_TEXT: dict[str, Any] = {"type": "string"}
# Before OpenAPI 3.2 (itemSchema), the schema of a text/event-stream describes one event of it.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": _TEXT, "data": _TEXT, "id": _TEXT, "retry": {"type": "integer"}},
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "param", "code"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}
_REASONS = {
    400: "Invalid request: the message names the field and the reason",
    401: "The admin key is missing",
    403: "Not the caller's to read or change",
    404: "Not found (another user's session answers the same)",
    409: "Conflicts with the current state, e.g. a turn is running",
    413: "The body, or a file it names, is too large",
    415: "The body is not application/json",
    429: "Rate limited (upstream, a per-user limit, or a budget: type budget_exceeded); see Retry-After",
    502: "The provider failed",
    503: "Overloaded, or not ready",
    504: "The provider timed out",
}
_OUTCOMES = {200: "OK", 201: "Created", 204: "Done, no content", 503: "Not ready: the body says what"}
_BODY_ERRORS = (400, 413, 415)
_CHAT_ERRORS = (*_BODY_ERRORS, 404, 409, 429, 502, 503, 504)


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    # Status -> {media type: schema} for the answers that are not errors; ``None`` for one without a body.
    ok: dict[int, dict[str, dict[str, Any]] | None] = field(default_factory=lambda: {200: {_JSON: _ANY_OBJECT}})
    errors: tuple[int, ...] = ()
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)
    anthropic_errors: bool = False


_STRING: dict[str, Any] = {"type": "string"}
_SESSION_HEADER = {"X-Session-Id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"}}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/chat/completions"): Operation(
        "OpenAI Chat Completions, streamed (SSE chunks) or whole",
        "openai",
        ChatCompletionBody,
        {200: {_JSON: _ANY_OBJECT, _SSE: _SSE_EVENT}},
        _CHAT_ERRORS,
        headers=_SESSION_HEADER,
    ),
    ("GET", "/v1/models"): Operation("The models every pool serves", "openai"),
    ("POST", "/v1/messages"): Operation(
        "Anthropic Messages, streamed or whole; errors in Anthropic's shape",
        "anthropic",
        MessagesBody,
        {200: {_JSON: _ANY_OBJECT, _SSE: _SSE_EVENT}},
        _CHAT_ERRORS,
        headers=_SESSION_HEADER,
        anthropic_errors=True,
    ),
    ("POST", "/api/streaming/chat"): Operation(
        "Relay's streaming chat: typed SSE, NDJSON, plain text, or one JSON reply (stream_format)",
        "streaming",
        StreamingChatBody,
        {200: {_SSE: _SSE_EVENT, "application/x-ndjson": _TEXT, "text/plain": _TEXT, _JSON: _ANY_OBJECT}},
        _CHAT_ERRORS,
        headers=_SESSION_HEADER,
    ),
    ("GET", "/api/streaming/runs/{run_id}/events"): Operation(
        "A run's events after Last-Event-ID (or ?after=), then its live tail",
        "streaming",
        ok={200: {_SSE: _SSE_EVENT}},
        errors=(400, 404),
        query={"after": _STRING},
        headers={"Last-Event-ID": _STRING},
    ),
    ("GET", "/api/streaming/providers"): Operation("Configured and registered providers; never a key", "providers"),
    ("POST", "/api/streaming/providers/register"): Operation(
        "Register a provider and deploy its pool (admin)",
        "providers",
        RegisterProviderBody,
        {201: {_JSON: _ANY_OBJECT}},
        (*_BODY_ERRORS, 401, 403, 409, 503),
    ),
    ("GET", "/api/streaming/providers/health"): Operation("Each pool's reachability and breaker", "providers"),
    ("DELETE", "/api/streaming/providers/{provider_id}"): Operation(
        "Unregister a provider and delete its pool (admin)", "providers", errors=(401, 403, 404)
    ),
    ("POST", "/api/sessions"): Operation(
        "Create a session", "sessions", CreateSessionBody, {201: {_JSON: _ANY_OBJECT}}, _BODY_ERRORS
    ),
    ("GET", "/api/sessions"): Operation(
        "The caller's sessions, newest first, a page at a time",
        "sessions",
        errors=(400, 403),
        query={
            "limit": {"type": "integer", "minimum": 1, "maximum": 200},
            "cursor": _STRING,
            "user_id": _STRING,
        },
    ),
    ("GET", "/api/sessions/{session_id}"): Operation("One session (ETag: its version)", "sessions", errors=(404,)),
    ("PATCH", "/api/sessions/{session_id}"): Operation(
        "Change a session's name or data; If-Match (or version) makes it conditional",
        "sessions",
        PatchSessionBody,
        errors=(*_BODY_ERRORS, 404, 409),
        headers={"If-Match": _STRING},
    ),
    ("DELETE", "/api/sessions/{session_id}"): Operation(
        "Delete a session and its history", "sessions", ok={204: None}, errors=(404, 409)
    ),
    ("GET", "/api/sessions/{session_id}/messages"): Operation(
        "A session's messages",
        "sessions",
        errors=(400, 404),
        query={
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "before": {"type": "integer", "minimum": 0},
        },
    ),
    ("GET", "/api/sessions/{session_id}/runs"): Operation("A session's runs", "sessions", errors=(404,)),
    ("GET", "/api/users/{user_id}/memories"): Operation("The caller's memories", "sessions", errors=(403,)),
    ("DELETE", "/api/users/{user_id}/memories"): Operation(
        "Forget the caller's memories, or one (memory_id)", "sessions", errors=(403,), query={"memory_id": _STRING}
    ),
    ("POST", "/v1/responses"): Operation(
        "OpenAI Responses: a run of a session actor, streamed (SSE events) or whole, chained or in a conversation",
        "responses",
        ResponsesBody,
        {200: {_JSON: _ANY_OBJECT, _SSE: _SSE_EVENT}},
        (*_CHAT_ERRORS, 409),
    ),
    ("GET", "/v1/responses/{response_id}"): Operation(
        "A response; with stream=true a background response replayed from starting_after, then live",
        "responses",
        ok={200: {_JSON: _ANY_OBJECT, _SSE: _SSE_EVENT}},
        errors=(400, 404),
        query={"stream": _STRING, "starting_after": {"type": "integer", "minimum": -1}},
    ),
    ("DELETE", "/v1/responses/{response_id}"): Operation("Delete a response", "responses", errors=(404,)),
    ("POST", "/v1/responses/{response_id}/cancel"): Operation(
        "Cancel a background response (idempotent)", "responses", errors=(400, 404)
    ),
    ("GET", "/v1/responses/{response_id}/input_items"): Operation(
        "The input items of a response and of the chain before it, paged",
        "responses",
        errors=(400, 404),
        query={"after": _STRING, "limit": {"type": "integer", "minimum": 1, "maximum": 100}, "order": _STRING},
    ),
    ("POST", "/v1/conversations"): Operation(
        "Create a conversation (a session with a conv_ id), with up to 20 items",
        "conversations",
        CreateConversationBody,
        errors=(*_BODY_ERRORS, 404),
    ),
    ("GET", "/v1/conversations/{conversation_id}"): Operation("One conversation", "conversations", errors=(404,)),
    ("POST", "/v1/conversations/{conversation_id}"): Operation(
        "Replace a conversation's metadata", "conversations", UpdateConversationBody, errors=(*_BODY_ERRORS, 404)
    ),
    ("DELETE", "/v1/conversations/{conversation_id}"): Operation(
        "Delete a conversation and its items", "conversations", errors=(404, 409)
    ),
    ("GET", "/v1/conversations/{conversation_id}/items"): Operation(
        "A conversation's items, a page at a time after an item id",
        "conversations",
        errors=(400, 404),
        query={
            "after": _STRING,
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "order": {"enum": ["asc", "desc"]},
            "include[]": {"type": "array", "items": _STRING},
        },
    ),
    ("POST", "/v1/conversations/{conversation_id}/items"): Operation(
        "Append up to 20 items; answers the added items",
        "conversations",
        AddItemsBody,
        errors=(*_BODY_ERRORS, 404, 409),
        query={"include[]": {"type": "array", "items": _STRING}},
    ),
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): Operation(
        "One item", "conversations", errors=(404,), query={"include[]": {"type": "array", "items": _STRING}}
    ),
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): Operation(
        "Delete the message that holds an item; answers the conversation", "conversations", errors=(404, 409)
    ),
    ("GET", "/api/spend"): Operation(
        "What runs cost (USD, tokens by kind, unpriced runs), grouped; a non-admin key sees its own user's only",
        "spend",
        errors=(400, 401, 403),
        query={
            "from": _STRING,
            "to": _STRING,
            "group_by": {"enum": ["user", "key", "provider", "model", "day"]},
            "user_id": _STRING,
        },
    ),
    ("PATCH", "/api/keys/{key_id}"): Operation(
        "Set or lift an API key's budget (admin)", "spend", KeyBudgetBody, errors=(*_BODY_ERRORS, 401, 403, 404)
    ),
    ("GET", "/api/stats"): Operation("Sessions, actors, pools and WebSocket counters", "operations"),
    ("GET", "/healthz"): Operation("Liveness: the ingress answers", "operations"),
    ("GET", "/readyz"): Operation(
        "Readiness: the directory answers and every pool has a running replica; 503 names what is not ready",
        "operations",
        ok={200: {_JSON: _ANY_OBJECT}, 503: {_JSON: _ANY_OBJECT}},
    ),
    ("GET", "/openapi.json"): Operation("This document", "operations"),
    ("GET", "/"): Operation("The web playground", "playground", ok={200: {"text/html": _TEXT}}),
}

_WEBSOCKET_NOTE = (
    "WebSocket: `/api/streaming/ws/{user_id}` carries `{message_type, request_id, data}` messages "
    "(chat_request, resume, cancel, feedback, ping; the server answers ack, stream_event, error, pong)."
)


def _bodies() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Each body model's reference, and the components: extra fields published as the parser accepts them."""
    models = sorted({op.body for op in OPERATIONS.values() if op.body}, key=lambda model: model.__name__)
    refs, definitions = models_json_schema([(model, "validation") for model in models], ref_template=_REF)
    components: dict[str, Any] = definitions.get("$defs", {})
    for model in models:
        accepted: frozenset[str] = getattr(model, "accepted_extra", frozenset())
        if model.model_config.get("extra") == "allow":
            schema = components[model.__name__]
            properties = schema.setdefault("properties", {})
            for name in sorted(accepted):
                properties.setdefault(name, {})
            schema["additionalProperties"] = False
    return {model: refs[(model, "validation")] for model in models}, components


def _responses(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, content in op.ok.items():
        described: dict[str, Any] = {"description": _OUTCOMES[status]}
        if content is not None:
            described["content"] = {media: {"schema": schema} for media, schema in content.items()}
        responses[str(status)] = described
    error = {"$ref": _REF.format(model="AnthropicError" if op.anthropic_errors else "Error")}
    for status in op.errors:
        responses[str(status)] = {"description": _REASONS[status], "content": {_JSON: {"schema": error}}}
    return responses


def _parameters(path: str, op: Operation) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in path.split("/") if part.startswith("{"))
    ]
    params += [{"name": name, "in": "query", "required": False, "schema": s} for name, s in op.query.items()]
    headers = {"X-User-Id": {"type": "string"}} | op.headers
    params += [{"name": name, "in": "header", "required": False, "schema": s} for name, s in headers.items()]
    return params


def openapi_spec(routes: list[BaseRoute]) -> dict[str, Any]:
    """The spec of every HTTP ``Route`` in ``routes``."""
    bodies, components = _bodies()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op = OPERATIONS.get((method, route.path)) or Operation(f"{method} {route.path}", "other")
            operation: dict[str, Any] = {
                "summary": op.summary,
                "tags": [op.tag],
                "operationId": re.sub(r"[^a-z0-9]+", "_", f"{method} {route.path}".lower()).strip("_"),
                "parameters": _parameters(route.path, op),
                "responses": _responses(op),
            }
            if op.body is not None:
                operation["requestBody"] = {"required": True, "content": {_JSON: {"schema": bodies[op.body]}}}
            paths.setdefault(route.path, {})[method.lower()] = operation
    try:
        version = metadata.version("relay")
    except metadata.PackageNotFoundError:
        version = "0"
    schemas = components | {"Error": _ERROR, "AnthropicError": _ANTHROPIC_ERROR}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Relay", "version": version, "description": _WEBSOCKET_NOTE},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_route(routes: list[BaseRoute]) -> Route:
    """``GET /openapi.json`` over ``routes`` and itself, built once: the routes do not change after startup."""
    holder: dict[str, Any] = {}

    async def spec(request: Request) -> Response:
        return JSONResponse(holder["spec"])

    route = Route("/openapi.json", spec, methods=["GET"])
    holder["spec"] = openapi_spec([*routes, route])
    return route
