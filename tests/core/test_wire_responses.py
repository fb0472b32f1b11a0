"""relay.wire.responses: exact event sequences of RESPONSES.md §3, fed through the real openai SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from relay.wire.responses import ResponsesEncoder, error_event, replay, response_skeleton

RESP = "resp_0123abcd"


def _encoder(**kwargs: Any) -> ResponsesEncoder:
    skeleton = response_skeleton(response_id=RESP, created_at=1700000000, model="relay-test")
    return ResponsesEncoder(skeleton, clock=lambda: 1700000009, **kwargs)


def _events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if not frame:
            continue
        name, body = frame.split("\n")
        event = orjson.loads(body.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        out.append(event)
    return out


def _run(batches: list[list[dict[str, Any]]], **kwargs: Any) -> tuple[ResponsesEncoder, bytes]:
    encoder = _encoder(**kwargs)
    out = encoder.start() + b"".join(encoder.encode(batch) for batch in batches)
    return encoder, out


TEXT = [
    [{"type": "text-delta", "content": "Hel"}, {"type": "text-delta", "content": "lo"}],
    [{"type": "text-delta", "content": "!"}],
    [
        {"type": "usage", "input_tokens": 7, "output_tokens": 3, "cache_read_tokens": 2},
        {"type": "finish", "reason": "stop"},
    ],
]
CALLS = [
    [
        {"type": "tool-call-start", "index": 0, "tool_call_id": "call_1", "name": "get_weather"},
        {"type": "tool-call-delta", "index": 0, "arguments_delta": '{"city":'},
        {"type": "tool-call-delta", "index": 0, "arguments_delta": '"Paris"}'},
        {"type": "tool-call-start", "index": 1, "tool_call_id": "call_2", "name": "get_time"},
        {"type": "tool-call-delta", "index": 1, "arguments_delta": "{}"},
    ],
    [
        {
            "type": "tool-call-end",
            "index": 0,
            "tool_call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "tool-call-end", "index": 1, "tool_call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "usage", "input_tokens": 5, "output_tokens": 9},
        {"type": "finish", "reason": "tool_calls"},
    ],
]
REASONING = [
    [{"type": "reasoning-delta", "content": "Think"}, {"type": "reasoning-delta", "content": "ing"}],
    [{"type": "reasoning-delta", "content": "", "signature": "SIG"}, {"type": "text-delta", "content": "Done"}],
    [
        {"type": "usage", "input_tokens": 4, "output_tokens": 6, "reasoning_tokens": 5},
        {"type": "finish", "reason": "stop"},
    ],
]


def test_text_sequence_a() -> None:
    encoder, out = _run(TEXT)
    events = _events(out)
    assert [(e["sequence_number"], e["type"]) for e in events] == list(
        enumerate(
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        )
    )
    item_id = f"msg_{RESP[5:]}_0"
    assert events[2]["item"] == {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    # one frame per text-delta event, whatever the batches (test_frames_do_not_depend_on_batching)
    assert [e["delta"] for e in events[4:7]] == ["Hel", "lo", "!"]
    assert all(e["item_id"] == item_id for e in events[3:9])
    assert all(e["logprobs"] == [] for e in events[4:8])
    assert events[7]["text"] == "Hello!"
    assert events[9]["item"]["status"] == "completed"
    final = events[-1]["response"]
    assert final == encoder.response
    assert final["status"] == "completed" and final["completed_at"] == 1700000009
    assert final["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10,
    }
    assert encoder.sequence == 11


def test_usage_null_until_terminal_and_output_empty_in_lifecycle_events() -> None:
    _, out = _run(TEXT)
    for event in _events(out)[:-1]:
        if "response" in event:
            assert event["response"]["usage"] is None and event["response"]["output"] == []
    assert not any(b'"error":{' in frame for frame in out.split(b"\n\n"))


def test_parallel_function_calls_sequence_b() -> None:
    encoder, out = _run(CALLS)
    events = _events(out)
    assert [e["type"].removeprefix("response.") for e in events] == [
        "created",
        "in_progress",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "completed",
    ]
    hexid = RESP[5:]
    assert events[2]["item"] == {
        "id": f"fc_{hexid}_0",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_1",
        "name": "get_weather",
    }
    assert {e["item_id"] for e in events[3:6]} == {f"fc_{hexid}_0"}
    assert events[5]["arguments"] == '{"city":"Paris"}' and events[5]["name"] == "get_weather"
    assert events[7]["output_index"] == 1 and events[8]["item_id"] == f"fc_{hexid}_1"
    output = encoder.response["output"]
    assert [(o["call_id"], o["arguments"], o["status"]) for o in output] == [
        ("call_1", '{"city":"Paris"}', "completed"),
        ("call_2", "{}", "completed"),
    ]


def test_reasoning_then_text_sequence_c_with_encrypted_content() -> None:
    _, out = _run(REASONING, include_encrypted=True)
    events = _events(out)
    assert [e["type"].removeprefix("response.") for e in events] == [
        "created",
        "in_progress",
        "output_item.added",
        "reasoning_summary_part.added",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.done",
        "reasoning_summary_part.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    rs = f"rs_{RESP[5:]}_0"
    assert events[2]["item"] == {"id": rs, "type": "reasoning", "summary": []}
    assert events[3]["part"] == {"type": "summary_text", "text": ""} and events[3]["summary_index"] == 0
    assert events[8]["item"] == {
        "id": rs,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking"}],
        "encrypted_content": "relay.anthropic.SIG",
    }
    assert events[9]["output_index"] == 1
    assert events[-1]["response"]["usage"]["output_tokens_details"] == {"reasoning_tokens": 5}


def test_encrypted_content_only_when_included_and_verbatim_from_openai() -> None:
    batches = [
        [
            {"type": "reasoning-delta", "content": "x", "encrypted_content": "gAAA=="},
            {"type": "finish", "reason": "stop"},
        ]
    ]
    encoder, _ = _run(batches)
    assert "encrypted_content" not in encoder.response["output"][0]
    encoder, _ = _run(batches, include_encrypted=True)
    assert encoder.response["output"][0]["encrypted_content"] == "gAAA=="


def test_length_is_incomplete_d() -> None:
    _, out = _run([[{"type": "text-delta", "content": "cut"}, {"type": "finish", "reason": "length"}]])
    events = _events(out)
    assert events[-2]["type"] == "response.output_item.done" and events[-2]["item"]["status"] == "incomplete"
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["completed_at"] is None and final["usage"]["total_tokens"] == 0
    _, out = _run([[{"type": "finish", "reason": "content_filter"}]])
    assert _events(out)[-1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_error_is_failed_alone_with_four_keys_and_one_terminal() -> None:
    error = {"type": "error", "error_type": "rate_limit_error", "message": "slow down", "status_code": 429}
    encoder, out = _run(
        [
            [{"type": "text-delta", "content": "a"}, error, {"type": "finish", "reason": "error"}],
            [{"type": "text-delta", "content": "late"}],
        ]
    )
    events = _events(out)
    terminals = [
        e for e in events if e["type"] in ("response.completed", "response.failed", "response.incomplete", "error")
    ]
    assert [e["type"] for e in terminals] == ["response.failed"] and events[-1] is terminals[0]
    assert terminals[0]["response"]["error"] == {
        "code": "rate_limit_exceeded",
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
    }
    assert terminals[0]["response"]["status"] == "failed"
    assert encoder.encode([{"type": "text-delta", "content": "more"}]) == b""


def test_cancelled_is_failed_with_status_cancelled() -> None:
    _, out = _run([[{"type": "text-delta", "content": "a"}, {"type": "finish", "reason": "cancelled"}]])
    final = _events(out)[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["status"] == "cancelled" and final["response"]["error"]["code"] == "response_cancelled"


def test_status_warning_and_cache_hit_emit_nothing() -> None:
    encoder = _encoder()
    encoder.start()
    quiet = [
        {"type": "status", "status": "retrying"},
        {"type": "warning", "message": "w"},
        {"type": "cache-hit", "route": "r", "age_s": 1.0},
        {"type": "usage", "input_tokens": 1},
    ]
    assert encoder.encode(quiet) == b""


def test_server_tools_are_marked_function_calls_and_outputs() -> None:
    batches = [
        [
            {"type": "tool-call-start", "index": 0, "tool_call_id": "call_s", "name": "web_fetch"},
            {
                "type": "tool-call-end",
                "index": 0,
                "tool_call_id": "call_s",
                "name": "web_fetch",
                "arguments": '{"u":1}',
            },
            {
                "type": "tool-execution-start",
                "tool_call_id": "call_s",
                "name": "web_fetch",
                "arguments": '{"u":1}',
                "step": 0,
            },
            {
                "type": "tool-execution-end",
                "tool_call_id": "call_s",
                "name": "web_fetch",
                "result": "page",
                "duration_ms": 3.0,
                "step": 0,
            },
            {"type": "text-delta", "content": "It says page."},
            {"type": "finish", "reason": "stop"},
        ]
    ]
    encoder, _ = _run(batches, server_tools=frozenset({"web_fetch"}))
    output = encoder.response["output"]
    assert [o["type"] for o in output] == ["function_call", "function_call_output", "message"]
    assert output[0]["relay"] == {"executed": True} and output[0]["arguments"] == '{"u":1}'
    assert output[1] == {
        "id": f"fco_{RESP[5:]}_1",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_s",
        "output": "page",
        "relay": {"executed": True, "is_error": False},
    }
    # an execution no call event announced still shows as its call, then its output
    encoder, _ = _run([batches[0][2:]])
    assert [o["type"] for o in encoder.response["output"]] == ["function_call", "function_call_output", "message"]


def test_url_citation_becomes_annotation() -> None:
    batches = [
        [
            {"type": "text-delta", "content": "See docs."},
            {"type": "citation", "url": "https://x.test", "title": "X"},
            {"type": "citation", "cited_text": "span", "document_index": 0},
            {"type": "finish", "reason": "stop"},
        ]
    ]
    encoder, out = _run(batches)
    added = [e for e in _events(out) if e["type"] == "response.output_text.annotation.added"]
    annotation = {"type": "url_citation", "start_index": 9, "end_index": 9, "url": "https://x.test", "title": "X"}
    assert len(added) == 1 and added[0]["annotation"] == annotation and added[0]["annotation_index"] == 0
    assert encoder.response["output"][0]["content"][0]["annotations"] == [annotation]


def test_deterministic_and_replay_drops_through_starting_after() -> None:
    batches = REASONING[:2] + CALLS
    _, first = _run(batches)
    _, second = _run(batches)
    assert first == second
    replayed = replay(_encoder(), batches, starting_after=5)
    assert replayed == b"".join(
        f + b"\n\n" for f in first.split(b"\n\n") if f and _events(f + b"\n\n")[0]["sequence_number"] > 5
    )
    assert _events(replayed)[0]["sequence_number"] == 6
    assert replay(_encoder(), batches, starting_after=-1) == first


def test_frames_do_not_depend_on_batching() -> None:
    """A resumed stream re-batches the run log (a tail's catch-up is one batch): the frames must be the same.

    Joining a batch's text-deltas into one frame shifted the later sequence numbers, so a reader resuming with
    ``starting_after`` lost the text between (tests/integration/test_responses_serve.py found it through Serve).
    """
    events = [event for batch in REASONING[:2] + TEXT for event in batch if event["type"] != "finish"]
    events.append({"type": "finish", "reason": "stop"})
    one_by_one = _run([[event] for event in events])[1]
    assert _run([events])[1] == one_by_one
    assert _run([events[:3], events[3:5], events[5:]])[1] == one_by_one
    live = _events(_run([events[:4], events[4:]])[1])
    seen = max(e["sequence_number"] for e in live if e["type"] == "response.output_text.delta")
    resumed = _events(replay(_encoder(), [events], starting_after=seen - 1))
    assert resumed == [e for e in live if e["sequence_number"] >= seen]


def test_queued_background_start() -> None:
    skeleton = response_skeleton(response_id=RESP, created_at=1, model="m", background=True, queued=True)
    encoder = ResponsesEncoder(skeleton)
    events = _events(
        encoder.start(queued=True) + encoder.begin() + encoder.encode([{"type": "finish", "reason": "stop"}])
    )
    assert [(e["type"], e.get("response", {}).get("status")) for e in events] == [
        ("response.created", "queued"),
        ("response.queued", "queued"),
        ("response.in_progress", "in_progress"),
        ("response.completed", "completed"),
    ]
    replayed = _events(replay(ResponsesEncoder(skeleton), [[{"type": "finish", "reason": "stop"}]], 1, queued=True))
    assert [e["sequence_number"] for e in replayed] == [2, 3]


def test_flat_error_event_for_failures_outside_a_response() -> None:
    (event,) = _events(error_event("bad", code="invalid_prompt"))
    assert event == {"type": "error", "sequence_number": 0, "code": "invalid_prompt", "message": "bad", "param": None}


# -- through the real openai SDK -------------------------------------------------------------------------------


def _client(body: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/responses"
        return httpx.Response(200, content=body, headers={"content-type": content_type})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return openai.OpenAI(api_key="k", base_url="http://relay.test/v1", http_client=http)


@pytest.mark.parametrize(
    "batches", [TEXT, CALLS, REASONING, REASONING[:2] + CALLS], ids=["text", "calls", "reasoning", "mixed"]
)
def test_openai_stream_helper_accepts_the_bytes(batches: list[list[dict[str, Any]]]) -> None:
    encoder, out = _run(batches, include_encrypted=True)
    client = _client(out, "text/event-stream")
    with client.responses.stream(model="relay-test", input="hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    expected = encoder.response
    assert final.id == RESP and len(final.output) == len(expected["output"])
    text = "".join(p["text"] for o in expected["output"] if o["type"] == "message" for p in o["content"])
    assert final.output_text == text
    calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [
        (o["call_id"], o["name"], o["arguments"]) for o in expected["output"] if o["type"] == "function_call"
    ]
    assert final.usage is not None and final.usage.total_tokens == expected["usage"]["total_tokens"]


def test_openai_raw_stream_and_non_stream_body() -> None:
    encoder, out = _run(TEXT)
    events = list(_client(out, "text/event-stream").responses.create(model="relay-test", input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(11))
    assert events[4].type == "response.output_text.delta" and events[4].delta == "Hel"
    body = orjson.dumps(encoder.response)
    response = _client(body, "application/json").responses.create(model="relay-test", input="hi")
    assert response.output_text == "Hello!" and response.status == "completed"
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 2


@pytest.mark.parametrize(
    ("finish", "kind"),
    [("length", "response.incomplete"), ("cancelled", "response.failed"), ("error", "response.failed")],
)
def test_openai_stream_helper_iterates_non_completed_terminals(finish: str, kind: str) -> None:
    _, out = _run([[{"type": "text-delta", "content": "x"}, {"type": "finish", "reason": finish}]])
    with _client(out, "text/event-stream").responses.stream(model="relay-test", input="hi") as stream:
        kinds = [event.type for event in stream]
        # like OpenAI's own failed or incomplete streams: no response.completed, so no final response
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert kinds[-1] == kind


def test_openai_stream_helper_accepts_server_tool_items() -> None:
    batches = [
        [
            {"type": "tool-execution-start", "tool_call_id": "call_s", "name": "calc", "arguments": "{}", "step": 0},
            {
                "type": "tool-execution-end",
                "tool_call_id": "call_s",
                "name": "calc",
                "error": "boom",
                "duration_ms": 1.0,
                "step": 0,
            },
            {"type": "text-delta", "content": "failed"},
            {"type": "finish", "reason": "stop"},
        ]
    ]
    _, out = _run(batches)
    with _client(out, "text/event-stream").responses.stream(model="relay-test", input="hi") as stream:
        final = stream.get_final_response()
    assert [o.type for o in final.output] == ["function_call", "function_call_output", "message"]
    assert final.output[1].output == "boom" and final.output_text == "failed"


def test_skeleton_has_every_response_key_with_defaults_and_echoes() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {}, "strict": True}]
    skeleton = response_skeleton(
        response_id=RESP,
        created_at=1,
        model="m",
        conversation_id="conv_1",
        tools=tools,
        temperature=0.2,
        tool_choice=None,
        reasoning={"effort": "low"},
    )
    keys = "id object created_at status completed_at error incomplete_details instructions model output "
    keys += "parallel_tool_calls previous_response_id conversation tools tool_choice text reasoning store background "
    keys += "truncation temperature top_p max_output_tokens max_tool_calls top_logprobs service_tier prompt_cache_key "
    keys += "safety_identifier user metadata usage"
    assert set(keys.split()) <= skeleton.keys()
    assert (
        skeleton["tools"] == tools and skeleton["temperature"] == 0.2 and skeleton["conversation"] == {"id": "conv_1"}
    )
    assert (skeleton["tool_choice"], skeleton["truncation"], skeleton["parallel_tool_calls"]) == (
        "auto",
        "disabled",
        True,
    )
    assert skeleton["text"] == {"format": {"type": "text"}} and skeleton["metadata"] == {}
    assert skeleton["reasoning"] == {"effort": "low", "summary": None} and skeleton["usage"] is None
    with pytest.raises(TypeError, match="stream"):
        response_skeleton(response_id=RESP, created_at=1, model="m", stream=True)
