"""A fake OpenAI Chat Completions upstream for throughput runs: fixed TTFT, rate and length.

    .venv/bin/python -m benchmarks.fake_upstream --port 9100 --ttft-ms 50 --rate 50 --tokens 100

Raw ASGI under uvicorn, chunks assembled from bytes encoded once, no pydantic and no JSON
parsing beyond the request body: at C=128 it must stay far from being the bottleneck.

The stream is the exact shape of WIRE.md: the role chunk after the TTFT, then one content chunk
per token at ``rate`` tokens/s, the finish chunk (``stop``), the usage chunk when the request
sets ``stream_options.include_usage``, and ``data: [DONE]``. Its text is ``reply_text(tag, n)``:
the tag is the last user message when it is 1 to 32 letters or digits (``t`` otherwise), so a
load generator that gives every stream its own tag can check every stream's text exactly and
notice a chunk that reached the wrong stream.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import orjson
import uvicorn

__all__ = ["FakeUpstream", "reply_text", "main"]

CHUNK_ID = "chatcmpl-bench"
_TAG = re.compile(r"[A-Za-z0-9]{1,32}")
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def reply_text(tag: str, tokens: int) -> str:
    """The whole text of a reply: token i is ``"<tag>.<i> "``."""
    return "".join(f"{tag}.{i} " for i in range(tokens))


def _tag(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or ()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) and _TAG.fullmatch(content) else "t"
    return "t"


class FakeUpstream:
    """The ASGI app: ``POST /v1/chat/completions`` (streamed or not) and ``GET /v1/models``."""

    def __init__(self, *, ttft_s: float, rate: float, tokens: int) -> None:
        if rate <= 0 or tokens < 0 or ttft_s < 0:
            raise ValueError("rate must be > 0, tokens and ttft_s >= 0")
        self.ttft_s, self.rate, self.tokens = ttft_s, rate, tokens
        self.created = int(time.time())
        # ".<i> " for every token: a content chunk is head + tag + this + tail, no encoding per token.
        self._suffixes = [f".{i} ".encode() for i in range(tokens)]
        self._models = orjson.dumps(
            {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]}
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            await _respond(send, 200, _JSON, self._models)
        elif scope["method"] == "POST" and path.endswith("/chat/completions"):
            body = await _body(receive)
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                request = None
            if not isinstance(request, dict):
                await _respond(send, 400, _JSON, _error("the body must be a JSON object", None))
            elif request.get("stream"):
                await self._stream(request, send)
            else:
                await self._complete(request, send)
        else:
            await _respond(send, 404, _JSON, _error(f"no route {scope['method']} {path}", None))

    def _chunk_head(self, model: str) -> bytes:
        common = {"id": CHUNK_ID, "object": "chat.completion.chunk", "created": self.created, "model": model}
        return b"data: " + orjson.dumps(common)[:-1]

    async def _stream(self, request: dict[str, Any], send: Any) -> None:
        model, tag = str(request.get("model") or "fake"), _tag(request).encode()
        head = self._chunk_head(model)
        text_head = head + b',"choices":[{"index":0,"delta":{"content":"' + tag
        text_tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
        await asyncio.sleep(self.ttft_s)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        role = b',"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
        await _more(send, head + role + b'"logprobs":null,"finish_reason":null}]}\n\n')
        start = time.monotonic()
        for i, suffix in enumerate(self._suffixes):
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await _more(send, text_head + suffix + text_tail)
        tail = head + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
        if (request.get("stream_options") or {}).get("include_usage"):
            tail += head + b',"choices":[],"usage":' + orjson.dumps(self._usage()) + b"}\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})

    async def _complete(self, request: dict[str, Any], send: Any) -> None:
        await asyncio.sleep(self.ttft_s + self.tokens / self.rate)
        message = {"role": "assistant", "content": reply_text(_tag(request), self.tokens), "refusal": None}
        body = {
            "id": CHUNK_ID,
            "object": "chat.completion",
            "created": self.created,
            "model": str(request.get("model") or "fake"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": self._usage(),
        }
        await _respond(send, 200, _JSON, orjson.dumps(body))

    def _usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": 5,
            "completion_tokens": self.tokens,
            "total_tokens": self.tokens + 5,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


def _error(message: str, param: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}})


async def _body(receive: Any) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _more(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="delay before the first chunk")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second within a stream")
    parser.add_argument("--tokens", type=int, default=100, help="content chunks per reply")
    args = parser.parse_args(argv)
    app = FakeUpstream(ttft_s=args.ttft_ms / 1000, rate=args.rate, tokens=args.tokens)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
