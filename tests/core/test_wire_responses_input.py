"""relay.wire.responses_input: the loose input shapes of RESPONSES.md §2, and a named field on every 400."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import InvalidRequest, NotFound
from relay.wire.responses_input import (
    call_ids,
    chat_params,
    input_items,
    input_messages,
    parse_body,
)


def _none(_: str) -> dict[str, Any] | None:
    return None


def _bad(data: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_body({"model": "m", "input": "hi"} | data)
    return info.value


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}, "tools[1].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"background": True, "store": False}, "background"),
        ({"conversation": "c_1"}, "conversation"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_every_400_names_its_field(data: dict[str, Any], param: str) -> None:
    assert _bad(data).param == param


@pytest.mark.parametrize(
    "tool",
    [
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "mcp",
        "image_generation",
        "computer_use_preview",
        "local_shell",
        "custom",
    ],
)
def test_hosted_tools_are_refused_by_name(tool: str) -> None:
    error = _bad({"tools": [{"type": tool}]})
    assert error.param == "tools[0].type" and tool in error.message


def test_conversation_errors_are_the_documented_ones() -> None:
    error = _bad({"conversation": "conv_1", "previous_response_id": "resp_1"})
    assert error.param is None and error.code == "mutually_exclusive_parameters"
    assert error.message == (
        "Mutually exclusive parameters. Ensure you are only providing one of: 'previous_response_id' or 'conversation'."
    )
    assert (
        _bad({"conversation": {"id": "nope"}}).message
        == "Invalid 'conversation': 'nope'. Expected an ID that begins with 'conv_'."
    )


def test_unknown_fields_are_ignored_and_defaults_hold() -> None:
    body = parse_body(
        {"model": "m", "input": "hi", "prompt_cache_options": {}, "context_management": [], "include": []}
    )
    assert body.store is True and body.background is False and body.include_encrypted is False
    assert parse_body(
        {"model": "m", "conversation": {"id": "conv_ab"}, "include": ["reasoning.encrypted_content"]}
    ).include_encrypted


def test_chat_params() -> None:
    body = parse_body(
        {
            "model": "m",
            "input": "hi",
            "tools": [
                {"type": "function", "name": "a", "description": "A", "parameters": {"type": "object"}, "strict": True},
                {"type": "function", "name": "b", "parameters": None, "strict": None},
            ],
            "tool_choice": {"type": "function", "name": "a"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "low", "summary": "auto", "mode": "x"},
            "max_output_tokens": 100,
            "temperature": 0.5,
            "top_p": 0.9,
            "safety_identifier": "u1",
            "prompt_cache_key": "ck",
        }
    )
    assert chat_params(body) == {
        "tools": [
            {
                "type": "function",
                "function": {"name": "a", "parameters": {"type": "object"}, "description": "A", "strict": True},
            },
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "a"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "max_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u1",
    }


def test_allowed_tools_narrows_the_tools() -> None:
    tools = [{"type": "function", "name": n, "parameters": {}, "strict": None} for n in ("a", "b", "c")]
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}
    params = chat_params(parse_body({"model": "m", "tools": tools, "tool_choice": choice}))
    assert params["tool_choice"] == "required" and [t["function"]["name"] for t in params["tools"]] == ["b"]
    with pytest.raises(InvalidRequest) as info:
        chat_params(parse_body({"model": "m", "tools": tools, "tool_choice": {"type": "web_search"}}))
    assert info.value.param == "tool_choice"


def test_string_input_and_instructions() -> None:
    assert input_messages("hi", resolve=_none, instructions="Be brief") == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_agents_sdk_replay_with_calls_reasoning_and_outputs() -> None:
    items = [
        {"content": "weather?", "role": "user"},
        {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "need tool"}],
            "encrypted_content": "relay.anthropic.SIG",
        },
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "w",
            "arguments": "{}",
            "status": "completed",
        },
        {
            "id": "fc_2",
            "type": "function_call",
            "call_id": "call_2",
            "name": "t",
            "arguments": "{}",
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]},
        {"role": "developer", "content": "be short"},
    ]
    assert input_messages(items, resolve=_none) == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "thinking_blocks": [{"type": "thinking", "thinking": "need tool", "signature": "SIG"}],
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "system", "content": "be short"},
    ]


def test_ai_sdk_shapes_item_references_and_openai_reasoning() -> None:
    stored = {
        "msg_9": {
            "id": "msg_9",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Hi!", "annotations": []}],
        },
        "rs_9": {"id": "rs_9", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
    }
    items = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
            ],
        },
        {"type": "item_reference", "id": "rs_9"},
        {"id": "msg_9"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "More."}]},
        {"type": "reasoning", "summary": [], "encrypted_content": None},
        {
            "role": "user",
            "content": [
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
            ],
        },
    ]
    assert input_messages(items, resolve=stored.get) == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Hi!",
            "thinking_blocks": [{"type": "reasoning", "id": "rs_9", "summary": [], "encrypted_content": "gAAAA"}],
        },
        {"role": "assistant", "content": "More."},
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            ],
        },
    ]


def test_langchain_reasoning_without_encrypted_content_is_looked_up_or_dropped() -> None:
    stored = {
        "rs_1": {
            "id": "rs_1",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "s"}],
            "encrypted_content": "relay.anthropic.X",
        }
    }
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}]},
        {"type": "reasoning", "id": "rs_gone", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A", "annotations": []}],
            "id": "msg_1",
        },
    ]
    (message,) = input_messages(items, resolve=stored.get)
    assert message["thinking_blocks"] == [{"type": "thinking", "thinking": "s", "signature": "X"}]


def test_pydantic_ai_string_assistant_and_function_call_output_against_known_ids() -> None:
    items = [
        {"role": "assistant", "content": "ok"},
        {"type": "function_call_output", "call_id": "call_old", "output": "r"},
    ]
    messages = input_messages(
        items, resolve=_none, known_call_ids=call_ids([{"role": "assistant", "tool_calls": [{"id": "call_old"}]}])
    )
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_old", "content": "r"}


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"type": "function_call_output", "call_id": "call_x", "output": "r"}], "input[0].call_id"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "input[1].role"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}], "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}], "input[0].content[0].file_id"),
        (
            [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}],
            "input[0].content[0].image_url",
        ),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "input[0].content[0].type"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input[0].call_id"),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type"),
        (["text"], "input[0]"),
    ],
)
def test_input_400s_name_the_item_field(items: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        input_messages(items, resolve=_none)
    assert info.value.param == param


def test_unknown_item_reference_is_the_404_of_section_4() -> None:
    with pytest.raises(NotFound) as info:
        input_messages([{"role": "user", "content": "a"}, {"type": "item_reference", "id": "rs_x"}], resolve=_none)
    assert info.value.param == "input[1].id"
    assert info.value.message.startswith(
        "Item with id 'rs_x' not found. Items are not persisted when `store` is set to false."
    )


def test_input_items_are_typed_with_ids_and_completed() -> None:
    (single,) = input_items("hi")
    assert single["id"].startswith("msg_") and single["status"] == "completed"
    assert single["content"] == [{"type": "input_text", "text": "hi"}] and single["type"] == "message"
    items = input_items(
        [
            {"role": "assistant", "content": "a", "id": "msg_keep"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "item_reference", "id": "msg_old"},
        ]
    )
    assert items[0]["id"] == "msg_keep" and items[0]["content"] == [
        {"type": "output_text", "text": "a", "annotations": []}
    ]
    assert items[1]["id"].startswith("fc_") and items[1]["status"] == "completed"
    assert items[2] == {"type": "item_reference", "id": "msg_old"}
