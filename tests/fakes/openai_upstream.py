"""A fake OpenAI Chat Completions server on 127.0.0.1, speaking the wire format of WIRE.md.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, and Azure OpenAI's
``POST /openai/deployments/{deployment}/chat/completions`` (needs the
``api-version`` query and the ``api-key`` header; the model is the deployment
unless the body names one) and ``GET /openai/models``; the Responses API,
``POST /v1/responses`` and Azure's ``POST /openai/responses``, lives in
``tests.fakes.openai_responses`` behind the same keys and scripts. Requests are validated
like OpenAI does (400 with an OpenAI error body) and recorded in ``requests``.
Built with an ``api_key``, the ``/v1`` routes need ``Authorization: Bearer
<api_key>`` and answer a missing or wrong one with OpenAI's exact 401 bodies;
built without, the fake is a local server (vLLM, Ollama) that takes any key.

A stream opens with a ``: keep-alive`` comment and the role chunk
(``content: ""``, or ``content: null`` together with the first tool call when
the reply calls tools); a mid-stream error is a data chunk whose ``error`` has
all four keys.

The ``model`` picks a script, streamed (``stream: true``) or as one completion:

- ``fake``, and any unknown model: echoes the last user message word by word
  (text parts joined by spaces, plus `` [image]`` / `` [audio]`` / `` [file]``
  per other part), cut by ``stop`` (finish ``stop``) and by ``max_tokens`` or
  ``max_completion_tokens`` words (finish ``length``).
- any model but the failing ones, when the last message is a ``tool`` message:
  ``Tool said: <its content>``, finish ``stop``.
- ``fake-tools``: one call, ``call_abc``, to the first tool of ``tools`` (else
  ``get_weather``) with ``{"city": "Paris"}`` in fragments; finish ``tool_calls``.
- ``fake-parallel-tools``: ``call_a`` (Paris, index 0) and ``call_b`` (Rome,
  index 1), their argument fragments interleaved; finish ``tool_calls``.
- ``fake-call-<name>[+<name>…]``: one call per named tool, ids
  ``call_<turn>_<i>`` (``<turn>``: the assistant messages so far, plus one),
  arguments in two fragments: the last user message (a JSON object) when one
  tool is named, else that object's entry for each tool; finish
  ``tool_calls``. After a tool result it answers like any model (below).
- ``fake-loop-<name>[+<name>…]``: the same, and it calls again after every
  tool result, never answering (a run's step limit ends it).
- ``fake-citations``: ``Hello world`` and a delta with a ``url_citation``
  annotation over ``Hello``, as OpenAI's search models send.
- ``fake-reasoning``: DeepSeek's ``reasoning_content``, vLLM's ``reasoning``,
  then the echo text.
- ``fake-429``: 429, ``retry-after: 2`` and ``x-ratelimit-remaining-requests: 0``.
- ``fake-500``: 500 ``server_error``.
- ``fake-status-<code>`` for 400, 401, 403, 404, 413, 422, 429, 500, 503: that
  status with a realistic OpenAI error body (see ``STATUS_ERRORS``).
- ``fake-vllm-error``: 400 whose error ``code`` is the integer 400, as vLLM sends.
- ``fake-flaky-<N>``: per (model, last user text), the first N requests get
  429 (``retry-after: 1``, ``retry-after-ms: 20``); later ones act as ``fake``.
  ``tests.fakes.flaky_front.FlakyFront`` fails connections instead, before any byte.
- ``fake-unavailable-flaky-<N>``: the same with 503 ``server_error``.
- ``fake-midstream-error``: a text chunk, then an ``error`` key in a data chunk.
- ``fake-drop``: three text chunks, then the connection is cut without
  ``[DONE]`` (a non-stream request gets a cut JSON body).
- ``fake-hang``: waits 30 s (or until the client goes away), then acts as ``fake``.

Each record's ``disconnected`` (a ``threading.Event``) is set, and
``disconnected_at`` (``time.monotonic()``) stamped, when the client goes away
before the reply ends: during ``fake-hang``'s wait, or mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK_ID = "chatcmpl-fake123"
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = ("text", "image_url", "input_audio", "file")
PART_MARKERS = {"image_url": " [image]", "input_audio": " [audio]", "file": " [file]"}
AUDIO_FORMATS = ("wav", "mp3")
IMAGE_URL = re.compile(r"https?://\S+|data:image/[\w.+-]+;base64,.*", re.DOTALL)
FLAKY = re.compile(r"fake-(unavailable-)?flaky-(\d+)")
CALLS = re.compile(r"fake-(call|loop)-([\w+-]+)")
HANG_S = 30.0
# status: (message, type, code, extra headers)
STATUS_ERRORS: dict[int, tuple[str, str, str | None, dict[str, str]]] = {
    400: ("Invalid value for 'temperature': the fake was told to answer 400.", "invalid_request_error", None, {}),
    401: (
        "Incorrect API key provided: sk-fake***. You can find your API key at https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
        {},
    ),
    403: (
        "You have insufficient permissions for this operation. Missing scopes: model.request.",
        "invalid_request_error",
        "insufficient_permissions",
        {},
    ),
    404: (
        "The model `fake-status-404` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
        {},
    ),
    413: ("Request too large: the request body exceeds the maximum size.", "invalid_request_error", None, {}),
    422: ("Unprocessable entity: the fake was told to answer 422.", "invalid_request_error", None, {}),
    429: (
        "Rate limit reached for fake-status-429 on requests per min (RPM): Limit 3, Used 3, Requested 1.",
        "requests",
        "rate_limit_exceeded",
        {"retry-after": "2", "x-ratelimit-remaining-requests": "0"},
    ),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None, {}),
    503: ("The engine is currently overloaded, please try again later", "server_error", None, {}),
}
MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY), or as the password field (with empty username) if you're accessing the "
    "API from your browser and are prompted for a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
USAGE_DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 1},
}


class Dropped(Exception):
    """Raised inside a response body so that uvicorn aborts the connection."""


@dataclass
class Script:
    """What a reply streams: deltas, then its finish, an ``error`` data chunk, or a cut connection."""

    deltas: list[dict[str, Any]]
    finish_reason: str = "stop"
    ending: Literal["finish", "error", "drop"] = "finish"


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | int | None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=(headers or {}) | {"x-request-id": "req_fake"})


def _masked(key: str) -> str:
    """How OpenAI quotes a wrong key: its first 3 and last 4 characters."""
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 7 else key


def _invalid(message: str, param: str | None, code: str | None) -> Response:
    return _error(400, message, "invalid_request_error", code, param=param)


def _not_one_of(value: Any, supported: tuple[str, ...]) -> str:
    names = [f"'{name}'" for name in supported]
    listed = f"{', '.join(names[:-1])}{',' if len(names) > 2 else ''} and {names[-1]}"
    return f"Invalid value: '{value}'. Supported values are: {listed}."


def _validate(body: dict[str, Any]) -> Response | None:
    """The first of the checks OpenAI makes that ``body`` fails, as its 400 response."""
    if body.get("stream_options") is not None and not body.get("stream"):
        return _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options", None
        )
    messages = body.get("messages")
    if messages is None:
        return _invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        return _invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    answerable: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return _invalid(_not_one_of(role, ROLES), f"messages[{i}].role", "invalid_value")
        if role == "tool" and message.get("tool_call_id") not in answerable:
            return _invalid(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                "'tool_calls'.",
                f"messages.[{i}].role",
                None,
            )
        if role == "assistant":
            answerable = {call.get("id") for call in message.get("tool_calls") or []}
        elif role != "tool":
            answerable = set()
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                problem = _validate_part(part, f"messages[{i}].content[{j}]", role)
                if problem:
                    return problem
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema")
        missing = (
            "json_schema" if not isinstance(schema, dict) else "json_schema.name" if not schema.get("name") else ""
        )
        if missing:
            return _invalid(
                f"Missing required parameter: 'response_format.{missing}'.",
                f"response_format.{missing}",
                "missing_required_parameter",
            )
    return None


def _validate_part(part: Any, where: str, role: str) -> Response | None:
    kind = part.get("type") if isinstance(part, dict) else None
    allowed = (*PART_TYPES, "refusal") if role == "assistant" else PART_TYPES
    if kind not in allowed:
        return _invalid(_not_one_of(kind, allowed), f"{where}.type", "invalid_value")
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url")
        if not isinstance(url, str) or not IMAGE_URL.fullmatch(url):
            return _invalid(
                f"Invalid image URL: '{where}.image_url.url'. Expected an http(s) URL or a base64-encoded data URL "
                "with an image MIME type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=').",
                f"{where}.image_url.url",
                "invalid_value",
            )
    if kind == "input_audio":
        audio_format = (part.get("input_audio") or {}).get("format")
        if audio_format not in AUDIO_FORMATS:
            return _invalid(_not_one_of(audio_format, AUDIO_FORMATS), f"{where}.input_audio.format", "invalid_value")
    return None


def _text(content: Any) -> str:
    """A message's text: the string, or the text parts joined by spaces plus a marker per other part."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    text = " ".join(part["text"] for part in parts if part.get("type") == "text")
    return text + "".join(PART_MARKERS.get(part.get("type"), "") for part in parts)


def _user_text(messages: list[dict[str, Any]]) -> str:
    return next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")


def _call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return {"tool_calls": [call]}


def _arguments(index: int, fragment: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def _echo(text: str, body: dict[str, Any]) -> Script:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    cuts = [text.index(word) for word in stops if word and word in text]
    words = text[: min(cuts, default=len(text))].split()
    limit = next((body[key] for key in ("max_completion_tokens", "max_tokens") if body.get(key) is not None), None)
    finish = "stop"
    if limit is not None and len(words) > limit:
        words, finish = words[:limit], "length"
    return Script([{"content": word + " "} for word in words], finish)


def _script(model: str, body: dict[str, Any]) -> Script:
    messages: list[dict[str, Any]] = body["messages"]
    if model == "fake-midstream-error":
        return Script([{"content": "partial "}], ending="error")
    if model == "fake-drop":
        return Script([{"content": word} for word in ("this ", "gets ", "cut ")], ending="drop")
    calls = CALLS.fullmatch(model)
    if calls and (calls[1] == "loop" or messages[-1]["role"] != "tool"):
        return _named_calls(calls[2].split("+"), messages)
    if messages[-1]["role"] == "tool":
        return Script([{"content": "Tool said: "}, {"content": _text(messages[-1].get("content"))}])
    tool = next(iter(body.get("tools") or []), None)
    name = tool["function"]["name"] if tool else "get_weather"
    if model == "fake-tools":
        fragments = ('{"ci', 'ty": "Par', 'is"}')
        return Script([_call_start(0, "call_abc", name), *(_arguments(0, f) for f in fragments)], "tool_calls")
    if model == "fake-parallel-tools":
        paris, rome = ('{"ci', 'ty": "Par', 'is"}'), ('{"ci', 'ty": "Ro', 'me"}')
        deltas = [_call_start(0, "call_a", name), _arguments(0, paris[0]), _call_start(1, "call_b", name)]
        deltas.append(_arguments(1, rome[0]))
        for fragment_a, fragment_b in zip(paris[1:], rome[1:], strict=True):
            deltas += [_arguments(0, fragment_a), _arguments(1, fragment_b)]
        return Script(deltas, "tool_calls")
    if model == "fake-citations":
        citation = {"start_index": 0, "end_index": 5, "title": "Example", "url": "https://example.com"}
        annotations = [{"type": "url_citation", "url_citation": citation}]
        return Script([{"content": "Hello"}, {"content": " world"}, {"annotations": annotations}])
    text = _user_text(messages)
    if model == "fake-reasoning":
        return Script([{"reasoning_content": "think "}, {"reasoning": "more"}, {"content": text}])
    return _echo(text, body)


def _named_calls(names: list[str], messages: list[dict[str, Any]]) -> Script:
    turn = 1 + sum(message["role"] == "assistant" for message in messages)
    given = _user_text(messages)
    deltas = []
    for index, name in enumerate(names):
        arguments = given if len(names) == 1 else orjson.dumps(orjson.loads(given)[name]).decode()
        half = len(arguments) // 2
        deltas += [_call_start(index, f"call_{turn}_{index}", name), _arguments(index, arguments[:half])]
        deltas.append(_arguments(index, arguments[half:]))
    return Script(deltas, "tool_calls")


def _message(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """Folds stream deltas into a completion's message."""
    texts: dict[str, str] = {}
    calls: dict[int, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    for delta in deltas:
        for key in ("content", "reasoning_content", "reasoning"):
            if key in delta:
                texts[key] = texts.get(key, "") + delta[key]
        for call in delta.get("tool_calls", []):
            if "id" in call:
                calls[call["index"]] = {"id": call["id"], "type": "function", "function": dict(call["function"])}
            else:
                calls[call["index"]]["function"]["arguments"] += call["function"]["arguments"]
        annotations += delta.get("annotations", [])
    # The echo streams a space after its last word; a whole message has none.
    content = texts.pop("content", "").rstrip(" ") or None
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": annotations}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message | texts


class FakeOpenAI:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.flaky: dict[tuple[str, str], int] = {}
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/openai/deployments/{deployment}/chat/completions", self.azure_completions, methods=["POST"]),
                Route("/openai/models", self.models, methods=["GET"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/openai/responses", self.responses, methods=["POST"]),
            ]
        )

    def reset(self) -> None:
        """Forgets the recorded requests and the flaky scripts' counts."""
        self.requests.clear()
        self.flaky.clear()

    def _refused(self, request: Request) -> Response | None:
        """OpenAI's 401 for a missing or wrong bearer key, when this fake has a key; else None."""
        if self.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return _error(401, MISSING_KEY, "invalid_request_error", None)
        key = header[7:].strip()
        if key != self.api_key:
            message = (
                f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return _error(401, message, "invalid_request_error", "invalid_api_key")
        return None

    async def models(self, request: Request) -> Response:
        if request.url.path.startswith("/v1/") and (refused := self._refused(request)):
            return refused
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]})

    async def completions(self, request: Request) -> Response:
        body = await self._record(request)
        return self._refused(request) or await self._complete(request, body, None)

    async def azure_completions(self, request: Request) -> Response:
        body = await self._record(request)
        return self._azure_refused(request) or await self._complete(request, body, request.path_params["deployment"])

    async def responses(self, request: Request) -> Response:
        from .openai_responses import respond  # imported here: that module builds on this one

        return await respond(self, request)

    def _azure_refused(self, request: Request) -> Response | None:
        """Azure's answer to a request without its ``api-version`` query or ``api-key`` header; else None."""
        if "api-version" not in request.query_params:
            return _invalid(
                "Missing required query parameter: 'api-version'.", "api-version", "missing_required_parameter"
            )
        if "api-key" not in request.headers:
            return _error(
                401,
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource.",
                "invalid_request_error",
                "401",
            )
        return None

    async def _record(self, request: Request) -> Any:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        client = request.client.port if request.client else None
        record = {"body": body, "headers": dict(request.headers), "path": request.url.path, "port": client}
        request.state.record = record | {"disconnected": threading.Event(), "disconnected_at": None}
        self.requests.append(request.state.record)
        return body

    async def _complete(self, request: Request, body: Any, deployment: str | None) -> Response:
        if not isinstance(body, dict):
            return _invalid(
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.", None, None
            )
        model = body.get("model") or deployment
        if not model:
            return _invalid("you must provide a model parameter", None, None)
        failure = _validate(body) or self._failure(model, body)
        if failure:
            return failure
        if model == "fake-hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_disconnected(request), HANG_S)
                _gone(request.state.record)
        script = _script(model, body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stream = _watched(self._stream(model, script, include_usage), request.state.record)
            return StreamingResponse(stream, media_type="text/event-stream")
        if script.ending == "error":
            return _error(500, "upstream broke", "server_error", None)
        if script.ending == "drop":
            return StreamingResponse(_cut_json(), media_type="application/json")
        return JSONResponse(
            {
                "id": CHUNK_ID,
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": _message(script.deltas),
                        "finish_reason": script.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5} | USAGE_DETAILS,
            }
        )

    def _failure(self, model: str, body: dict[str, Any]) -> Response | None:
        """The error response of the scripts that fail before any reply, else None."""
        if model == "fake-429":
            return _error(
                429,
                "Rate limit reached for requests",
                "tokens",
                "rate_limit_exceeded",
                {"retry-after": "2", "x-ratelimit-remaining-requests": "0"},
            )
        if model == "fake-500":
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        if model == "fake-vllm-error":
            return _error(
                400,
                "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
                "(4000 in the messages, 1000 in the completion). Please reduce the length of the messages or "
                "completion.",
                "BadRequestError",
                400,
            )
        status = model.removeprefix("fake-status-")
        if status.isdigit() and int(status) in STATUS_ERRORS:
            message, type_, code, headers = STATUS_ERRORS[int(status)]
            return _error(int(status), message, type_, code, headers)
        flaky = FLAKY.fullmatch(model)
        if flaky:
            key = (model, _user_text(body["messages"]))
            failed = self.flaky.get(key, 0)
            if failed < int(flaky[2]):
                self.flaky[key] = failed + 1
                headers = {"retry-after": "1", "retry-after-ms": "20"}
                if flaky[1]:
                    return _error(503, STATUS_ERRORS[503][0], "server_error", None, headers)
                return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", headers)
        return None

    async def _stream(self, model: str, script: Script, include_usage: bool) -> AsyncIterator[bytes]:
        yield b": keep-alive comment\n\n"
        deltas = list(script.deltas)
        role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if deltas and "tool_calls" in deltas[0]:  # a tool-calling reply opens with its first call, content null
            role = {"role": "assistant", "content": None, **deltas.pop(0), "refusal": None}
        yield _chunk(model, role)
        for delta in deltas:
            await asyncio.sleep(0)
            yield _chunk(model, delta)
        if script.ending == "error":
            error = {"message": "upstream broke", "type": "server_error", "param": None, "code": None}
            yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
            return
        if script.ending == "drop":
            raise Dropped("fake-drop cuts the connection")
        yield _chunk(model, {}, script.finish_reason)
        if include_usage:
            yield (
                b"data: "
                + orjson.dumps(
                    {
                        "id": CHUNK_ID,
                        "object": "chat.completion.chunk",
                        "created": 1700000000,
                        "model": model,
                        "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11} | USAGE_DETAILS,
                    }
                )
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _gone(record: dict[str, Any]) -> None:
    record["disconnected_at"] = time.monotonic()
    record["disconnected"].set()


async def _watched(chunks: AsyncIterator[bytes], record: dict[str, Any]) -> AsyncIterator[bytes]:
    """The stream, marking its record when the client leaves before the end (a cut on purpose is no leaving)."""
    ended = False
    try:
        async for chunk in chunks:
            yield chunk
        ended = True
    except Dropped:
        ended = True
        raise
    finally:
        if not ended:
            _gone(record)


def _not_a_drop(record: logging.LogRecord) -> bool:
    """Keeps uvicorn from logging a traceback for each connection that fake-drop cuts on purpose."""
    return not (record.exc_info and isinstance(record.exc_info[1], Dropped))


async def _cut_json() -> AsyncIterator[bytes]:
    yield b'{"id": "' + CHUNK_ID.encode() + b'", "object": "chat.completion", "choices": ['
    raise Dropped("fake-drop cuts the connection")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """A real uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_not_a_drop)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
