"""Translation between Relay's OpenAI-shaped requests and the Anthropic wire (``relay.wire.anthropic``)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from relay.errors import InvalidRequest, Overloaded, ProviderError, UnsupportedFeature
from relay.events import finish, reasoning_delta, text_delta
from relay.reply import Reply
from relay.request import ChatRequest
from relay.wire.anthropic import (
    FINISH_FROM_ANTHROPIC,
    STOP_FROM_FINISH,
    STRUCTURED_TOOL,
    AnthropicEncoder,
    AnthropicStream,
    anthropic_error_body,
    anthropic_message,
    from_anthropic_messages,
    to_anthropic_request,
)
from relay.wire.openai import prepare_messages
from tests.cases import PDF, PNG, WEATHER_TOOL


def anthropic_body(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    request = ChatRequest(provider="claude", messages=messages, params=params, user=params.pop("user", None))
    return to_anthropic_request(request, "claude-x", 1024)


def test_system_and_developer_move_to_the_top_and_same_roles_merge() -> None:
    body = anthropic_body(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Hi", "name": "ada"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello"},
        ]
    )
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
    ]
    assert body["max_tokens"] == 1024 and body["model"] == "claude-x"


def test_tool_calls_become_tool_use_and_tool_results_lead_one_user_turn() -> None:
    body = anthropic_body(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "Thanks"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assistant, results = body["messages"][1], body["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert results["role"] == "user" and [b["type"] for b in results["content"]] == [
        "tool_result",
        "tool_result",
        "text",
    ]
    assert results["content"][1] == {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"}
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_maps(choice: Any, expected: dict[str, Any]) -> None:
    assert (
        anthropic_body([{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], tool_choice=choice)["tool_choice"]
        == expected
    )


def test_bad_tool_arguments_name_the_field() -> None:
    with pytest.raises(InvalidRequest) as exc:
        anthropic_body(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]},
            ]
        )
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"


def test_sampling_stop_user_and_thinking() -> None:
    body = anthropic_body(
        [{"role": "user", "content": "x"}], temperature=0.2, top_p=0.9, stop="END", user="u-1", max_tokens=50
    )
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u-1"}
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["max_tokens"] == 50
    thinking = anthropic_body([{"role": "user", "content": "x"}], reasoning_effort="medium", temperature=0.5)
    assert thinking["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert thinking["max_tokens"] > 4096 and "temperature" not in thinking


def test_response_format_becomes_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    body = anthropic_body(
        [{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "Person", "schema": schema}},
    )
    assert body["tools"][-1]["name"] == STRUCTURED_TOOL and body["tools"][-1]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": STRUCTURED_TOOL}


def test_a_non_object_schema_is_wrapped_under_value_with_its_defs_at_the_root() -> None:
    schema = {"type": "array", "items": {"$ref": "#/$defs/Point"}, "$defs": {"Point": {"type": "object"}}}
    body = anthropic_body(
        [{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "Points", "schema": schema}},
    )
    assert body["tools"][-1]["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/Point"}}},
        "required": ["value"],
        "$defs": {"Point": {"type": "object"}},
    }
    start = {"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": STRUCTURED_TOOL, "input": {}}}
    fragments = ['{"val', 'ue": [{"x"', ": 1}]}"]
    events = feed(
        AnthropicStream(structured=True, wrapped=True),
        [
            ("content_block_start", start),
            *[
                ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": f}})
                for f in fragments
            ],
            ("content_block_stop", {"index": 0}),
        ],
    )
    assert events == [{"type": "text-delta", "content": '[{"x":1}]'}]  # unwrapped whole, at the block's end


def test_thinking_blocks_go_back_signed_ahead_of_tool_use_when_thinking_is_on() -> None:
    signed = {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"}
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call],
            "thinking_blocks": [signed, {"type": "thinking", "thinking": "unsigned", "signature": ""}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
    ]
    on = anthropic_body(messages, thinking={"type": "enabled", "budget_tokens": 1024}, tools=[WEATHER_TOOL])
    assert on["messages"][1]["content"] == [
        signed,
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    off = anthropic_body(messages, tools=[WEATHER_TOOL])
    assert [b["type"] for b in off["messages"][1]["content"]] == ["tool_use"]
    assert "thinking_blocks" not in prepare_messages(messages)[1]  # never sent to an OpenAI-wire server
    with pytest.raises(UnsupportedFeature) as exc:  # Anthropic refuses thinking while a tool is forced
        anthropic_body(
            messages[:1],
            thinking={"type": "enabled", "budget_tokens": 1024},
            response_format={"type": "json_object"},
        )
    assert exc.value.param == "thinking"


def test_a_reply_keeps_each_signed_thinking_block() -> None:
    reply = Reply()
    reply.extend(
        [
            reasoning_delta("one "),
            reasoning_delta("two"),
            {"type": "reasoning-delta", "content": "", "signature": "s1"},
            reasoning_delta("three"),
            {"type": "reasoning-delta", "content": "", "signature": "s2"},
            reasoning_delta("loose"),
        ]
    )
    assert reply.thinking_blocks == [
        {"type": "thinking", "thinking": "one two", "signature": "s1"},
        {"type": "thinking", "thinking": "three", "signature": "s2"},
    ]
    assert reply.reasoning_content == "one twothreeloose"
    assert reply.thinking()[-1] == {"type": "thinking", "thinking": "loose", "signature": ""}
    assert anthropic_message(reply, "m")["content"] == reply.thinking()
    back = from_anthropic_messages(None, [{"role": "assistant", "content": reply.thinking()[:2]}])
    assert back[0]["thinking_blocks"] == reply.thinking_blocks


def sse(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: ")]


def test_relays_messages_stream_signs_thinking_pings_and_reports_cache_usage() -> None:
    encoder = AnthropicEncoder("m")
    usage = {"type": "usage", "input_tokens": 11, "output_tokens": 4, "cache_read_tokens": 5, "cache_write_tokens": 3}
    frames = sse(
        encoder.encode(
            [
                usage,
                reasoning_delta("hmm"),
                {"type": "reasoning-delta", "content": "", "signature": "sig"},
                text_delta("Hi"),
                finish("stop"),
            ]
        )
    )
    assert [f["type"] for f in frames] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert frames[0]["message"]["usage"] == {
        "input_tokens": 11,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 5,
        "output_tokens": 0,
    }
    assert frames[4]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert frames[-2]["usage"] == frames[0]["message"]["usage"] | {"output_tokens": 4}
    error = sse(AnthropicEncoder("m").encode([ProviderError("boom").to_event()]))[-1]
    assert error["error"] == {"type": "api_error", "message": "boom"} and error["request_id"].startswith("req_")
    body = anthropic_error_body(Overloaded("busy"))
    assert body["error"]["type"] == "overloaded_error" and body["request_id"].startswith("req_")


def test_images_and_documents_become_anthropic_blocks() -> None:
    body = anthropic_body(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:text/plain;base64," + base64.b64encode(b"notes").decode()},
                    },
                ],
            }
        ]
    )
    blocks = body["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    assert blocks[3] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "a.pdf",
    }
    assert blocks[4]["source"] == {"type": "text", "media_type": "text/plain", "data": "notes"}
    with pytest.raises(UnsupportedFeature):
        anthropic_body(
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]
        )


def test_stop_reasons_map_both_ways() -> None:
    for ours in ("stop", "length", "tool_calls", "content_filter"):
        assert FINISH_FROM_ANTHROPIC[STOP_FROM_FINISH[ours]] == ours
    assert FINISH_FROM_ANTHROPIC["stop_sequence"] == "stop"
    assert FINISH_FROM_ANTHROPIC["model_context_window_exceeded"] == "length"


def feed(stream: AnthropicStream, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [out for kind, data in events for out in stream.feed(kind, data)]


def test_anthropic_stream_translates_text_tools_thinking_usage() -> None:
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 5}},
    }
    events = feed(
        AnthropicStream(),
        [
            ("message_start", start),
            (
                "content_block_start",
                {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            ),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            ("content_block_stop", {"index": 0}),
            ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Checking"}}),
            ("content_block_stop", {"index": 1}),
            (
                "content_block_start",
                {"index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}},
            ),
            ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}}),
            ("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}}),
            ("content_block_stop", {"index": 2}),
            ("future_event", {"type": "future_event"}),
            ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ("message_stop", {"type": "message_stop"}),
        ],
    )
    assert events == [
        {"type": "reasoning-delta", "content": "hmm"},
        {"type": "reasoning-delta", "content": "", "signature": "sig"},  # kept: Anthropic wants it back
        {"type": "text-delta", "content": "Checking"},
        {"type": "tool-call-start", "index": 0, "tool_call_id": "toolu_1", "name": "f"},
        {"type": "tool-call-delta", "index": 0, "arguments_delta": '{"a"'},
        {"type": "tool-call-delta", "index": 0, "arguments_delta": ": 1}"},
        {"type": "tool-call-end", "index": 0, "tool_call_id": "toolu_1", "name": "f", "arguments": '{"a": 1}'},
        {"type": "usage", "input_tokens": 11, "output_tokens": 9, "cache_read_tokens": 5, "cache_write_tokens": 0},
        {"type": "finish", "reason": "tool_calls"},
    ]


def test_anthropic_midstream_error_is_classified_by_its_type() -> None:
    with pytest.raises(Overloaded) as exc:
        AnthropicStream(prefix="claude: ").feed(
            "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )
    assert exc.value.retryable and exc.value.message.startswith("claude: ")


def test_structured_tool_input_streams_as_text() -> None:
    events = feed(
        AnthropicStream(structured=True),
        [
            (
                "content_block_start",
                {"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": STRUCTURED_TOOL, "input": {}}},
            ),
            ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"n": 1}'}}),
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
            ("message_stop", {}),
        ],
    )
    assert events[0] == {"type": "text-delta", "content": '{"n": 1}'} and events[-1]["reason"] == "stop"


def test_citations_from_the_anthropic_stream() -> None:
    citation = {
        "type": "char_location",
        "cited_text": "grass is green",
        "document_index": 0,
        "document_title": "Facts",
        "start_char_index": 0,
        "end_char_index": 14,
    }
    stream = AnthropicStream()
    stream.feed("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    assert stream.feed(
        "content_block_delta", {"index": 0, "delta": {"type": "citations_delta", "citation": citation}}
    ) == [
        {
            "type": "citation",
            "cited_text": "grass is green",
            "title": "Facts",
            "document_index": 0,
            "start_index": 0,
            "end_index": 14,
        }
    ]
