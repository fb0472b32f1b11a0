from __future__ import annotations

import httpx2
import openai
import orjson
import pytest
from pydantic import ValidationError

from relay.events import EVENT_ADAPTER, error_event, finish, text_delta, usage
from relay.http.encoders import OpenAIChunkEncoder, encode_ndjson, encode_sse, openai_completion
from relay.reply import Reply

TOOL_EVENTS = [
    {"type": "tool-call-start", "index": 0, "tool_call_id": "call_1", "name": "get_weather"},
    {"type": "tool-call-delta", "index": 0, "arguments_delta": '{"city":'},
    {"type": "tool-call-delta", "index": 0, "arguments_delta": ' "Paris"}'},
    {
        "type": "tool-call-end",
        "index": 0,
        "tool_call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    },
]


def test_event_models_accept_every_constructor_and_reject_unknown_types() -> None:
    for event in [text_delta("a"), usage(1, 2), error_event("provider_error", "x"), finish("stop"), *TOOL_EVENTS]:
        assert EVENT_ADAPTER.validate_python(event).type == event["type"]
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python({"type": "text-delta"})
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python({"type": "finish", "reason": "exploded"})


def test_typed_sse_names_each_event_and_carries_ids() -> None:
    out = encode_sse([{**text_delta("hi"), "id": 3}, finish("stop")]).decode()
    assert out == (
        'event: text-delta\nid: 3\ndata: {"type":"text-delta","content":"hi","id":3}\n\n'
        'event: finish\ndata: {"type":"finish","reason":"stop"}\n\n'
    )


def test_ndjson_is_one_event_per_line() -> None:
    lines = encode_ndjson([text_delta("a"), finish("stop")]).splitlines()
    assert [orjson.loads(line)["type"] for line in lines] == ["text-delta", "finish"]


def _sdk_stream(body: bytes) -> list[openai.types.chat.ChatCompletionChunk]:
    """Feed encoder output to the official SDK, as a server response."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = openai.OpenAI(
        api_key="k", base_url="http://relay.test/v1", http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )
    return list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))


def test_openai_chunks_parse_in_the_official_sdk_with_tools_and_usage() -> None:
    encoder = OpenAIChunkEncoder("echo", include_usage=True)
    body = encoder.encode([text_delta("Hel"), text_delta("lo")]) + encoder.encode(
        [*TOOL_EVENTS, usage(5, 7), finish("tool_calls")]
    )
    chunks = _sdk_stream(body)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_1" and calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12
    assert len({c.id for c in chunks}) == 1


def test_openai_error_chunk_raises_in_the_sdk() -> None:
    encoder = OpenAIChunkEncoder("echo")
    body = encoder.encode([text_delta("par"), error_event("provider_error", "upstream broke"), finish("error")])
    with pytest.raises(openai.APIError, match="upstream broke"):
        _sdk_stream(body)


def test_reply_folds_a_stream_into_a_completion() -> None:
    reply = Reply()
    reply.extend([text_delta("a"), text_delta("b"), *TOOL_EVENTS, usage(2, 3), finish("tool_calls")])
    completion = openai_completion(reply, "echo")
    message = completion["choices"][0]["message"]
    assert message["content"] == "ab"
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["usage"]["total_tokens"] == 5
