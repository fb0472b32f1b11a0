"""Conversation items ↔ stored chat messages, and the seq-derived item ids: pure functions, no Ray, no store."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import InvalidRequest, NotFound
from relay.wire.conversation_items import ItemRef, item_id, items_messages, message_items, parse_item_id


def test_item_ids_round_trip_and_order_a_row_message_first_then_its_calls() -> None:
    refs = [
        ItemRef(7, "message"),
        ItemRef(7, "function_call", 0),
        ItemRef(7, "function_call", 1),
        ItemRef(8, "function_call_output"),
    ]
    assert [ref.id for ref in refs] == ["msg_7", "fc_7_0", "fc_7_1", "fco_8"]
    assert [parse_item_id(ref.id) for ref in refs] == refs
    assert sorted(refs, key=lambda ref: ref.order) == refs
    assert item_id(12, "function_call", 3) == "fc_12_3"


@pytest.mark.parametrize(
    "raw",
    [
        "msg_0",
        "msg_007",
        "msg_",
        "fc_7",
        "fco_7_1",
        "msg_7_1",
        "rs_7",
        "conv_7",
        "msg_9223372036854775808",  # past the store's 64-bit integer
        "msg_" + "1" * 20,
        "msg_3f2a9c0d4e5b6a7c8d9e0f1a2b3c4d5e",  # a Responses id
        " msg_7",
    ],
)
def test_ids_that_are_not_ours_name_no_item(raw: str) -> None:
    assert parse_item_id(raw) is None


def test_the_largest_seq_parses() -> None:
    assert parse_item_id("msg_9223372036854775807") == ItemRef(2**63 - 1, "message")


def test_user_and_system_messages_become_input_parts() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    file = {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}}
    user = {"seq": 3, "role": "user", "content": [{"type": "text", "text": "look"}, image, file]}
    assert message_items(user) == [
        {
            "type": "message",
            "id": "msg_3",
            "status": "completed",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA==", "file_id": None, "detail": "auto"},
                {
                    "type": "input_file",
                    "file_id": None,
                    "file_data": "data:application/pdf;base64,AA==",
                    "filename": "a.pdf",
                },
            ],
        }
    ]
    system = message_items({"seq": 4, "role": "system", "content": "be brief"})
    assert system[0]["role"] == "system" and system[0]["content"] == [{"type": "input_text", "text": "be brief"}]


def test_an_assistant_turn_is_its_text_then_one_item_per_call() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    items = message_items({"seq": 9, "role": "assistant", "content": "checking", "tool_calls": calls})
    assert items == [
        {
            "type": "message",
            "id": "msg_9",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "checking", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_9_0",
            "call_id": "call_a",
            "name": "weather",
            "arguments": '{"city":"Oslo"}',
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": "fc_9_1",
            "call_id": "call_b",
            "name": "time",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    only_calls = message_items({"seq": 10, "role": "assistant", "content": None, "tool_calls": calls[:1]})
    assert [item["id"] for item in only_calls] == ["fc_10_0"]
    # A row always holds an item, so it can be listed and deleted like any other.
    assert message_items({"seq": 11, "role": "assistant", "content": ""})[0]["content"] == []


def test_a_tool_message_is_a_function_call_output() -> None:
    assert message_items({"seq": 5, "role": "tool", "tool_call_id": "call_a", "content": "12°C"}) == [
        {"type": "function_call_output", "id": "fco_5", "call_id": "call_a", "output": "12°C", "status": "completed"}
    ]


def test_items_become_the_messages_a_turn_would_store() -> None:
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "call_a", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
    ]
    messages = items_messages(items)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[2]["content"] == "checking" and messages[2]["tool_calls"][0]["id"] == "call_a"
    stored = [m | {"seq": seq} for seq, m in enumerate(messages, start=1)]
    ids = [item["id"] for m in stored for item in message_items(m)]
    assert ids == ["msg_1", "msg_2", "msg_3", "fc_3_0", "fco_4"]


def test_an_output_may_answer_a_call_already_in_the_conversation() -> None:
    output = [{"type": "function_call_output", "call_id": "call_old", "output": "done"}]
    with pytest.raises(InvalidRequest) as unknown:
        items_messages(output)
    assert unknown.value.param == "items[0].call_id"
    assert items_messages(output, known_call_ids={"call_old"})[0]["tool_call_id"] == "call_old"


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"role": "user", "content": "a"}, {"role": "wizard", "content": "x"}], "items[1].role"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "items[0].content[0].text"),
        ([{"type": "function_call", "name": "f"}], "items[0].call_id"),
        ([{"type": "web_search_call"}], "items[0].type"),
        (["not an object"], "items[0]"),
        ([{"role": "assistant", "content": 5}], "items[0].content"),
        ([{"role": "assistant", "content": [{"type": "output_text", "text": 5}]}], "items[0].content[0].text"),
    ],
)
def test_bad_items_are_400s_naming_the_field(items: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as bad:
        items_messages(items)
    assert bad.value.param == param


def test_an_item_reference_names_nothing_in_a_conversation() -> None:
    with pytest.raises(NotFound) as missing:
        items_messages([{"type": "item_reference", "id": "msg_1"}])
    assert missing.value.param == "items[0].id" and "msg_1" in missing.value.message
