"""A fake OpenAI Chat Completions server on 127.0.0.1, speaking the wire format of WIRE.md.

The ``model`` picks a script: ``fake`` echoes, ``fake-tools`` streams a tool
call in fragments, ``fake-reasoning`` sends ``reasoning_content`` and vLLM's
``reasoning``, ``fake-429`` / ``fake-500`` answer with OpenAI error bodies,
``fake-midstream-error`` puts an ``error`` key in a data chunk.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK_ID = "chatcmpl-fake123"


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


def _error(status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=(headers or {}) | {"x-request-id": "req_fake"})


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]})

    async def completions(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append({"body": body, "headers": dict(request.headers)})
        model = body["model"]
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
        text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": CHUNK_ID,
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }
            )
        return StreamingResponse(self._stream(model, str(text), include_usage), media_type="text/event-stream")

    async def _stream(self, model: str, text: str, include_usage: bool) -> Any:
        yield b": keep-alive comment\n\n"
        yield _chunk(model, {"role": "assistant", "content": "", "refusal": None})
        finish = "stop"
        if model == "fake-tools":
            yield _chunk(
                model,
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                },
            )
            for fragment in ('{"ci', 'ty": "Par', 'is"}'):
                yield _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            finish = "tool_calls"
        elif model == "fake-reasoning":
            yield _chunk(model, {"reasoning_content": "think "})
            yield _chunk(model, {"reasoning": "more"})
            yield _chunk(model, {"content": text})
        elif model == "fake-midstream-error":
            yield _chunk(model, {"content": "partial "})
            yield b"data: " + orjson.dumps({"error": {"message": "upstream broke", "type": "server_error"}}) + b"\n\n"
            return
        else:
            for word in text.split(" "):
                await asyncio.sleep(0)
                yield _chunk(model, {"content": word + " "})
        yield _chunk(model, {}, finish)
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
                        "usage": {
                            "prompt_tokens": 7,
                            "completion_tokens": 4,
                            "total_tokens": 11,
                            "prompt_tokens_details": {"cached_tokens": 2},
                            "completion_tokens_details": {"reasoning_tokens": 1},
                        },
                    }
                )
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"


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
