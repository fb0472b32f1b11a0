"""``api: responses``: the openai and azure adapters over the Responses API, against the fake, through the SDK.

The fake's own streams are checked by the openai SDK's ``responses.stream()``
helper too (RESPONSES.md §3 ordering), so that the adapter is tested against
an honest wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from pydantic import ValidationError

from relay.config import ProviderConfig, RelaySettings
from relay.errors import AuthenticationFailed, InvalidRequest, ProviderError, RateLimited, UnsupportedFeature
from relay.events import EVENT_ADAPTER
from relay.http.schemas import validation_error
from relay.providers.coalesce import LoadGauge
from relay.providers.features import check_features
from relay.providers.runtime import ProviderRuntime
from relay.reply import Reply
from relay.request import ChatRequest
from relay.session.local_backend import LocalBackend
from relay.wire.anthropic import to_anthropic_request
from relay.wire.anthropic_ingress import anthropic_message
from relay.wire.openai_responses import ResponsesStream, responses_body
from tests.cases import PDF, WEATHER_TOOL, adapter_events, create_adapter, user_request
from tests.fakes.openai_responses import decrypt
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

KEY = "sk-proj-relaytest0123456789abcd"
FLAT_WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "Person",
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        "strict": True,
    },
}


def config(base_url: str, **kw: Any) -> ProviderConfig:
    fields = {"provider_id": "up", "provider_type": "openai", "model": "fake", "base_url": base_url}
    return ProviderConfig(**(fields | {"api": "responses"} | kw))


def request(text: str = "hello big world", **kw: Any) -> ChatRequest:
    return user_request(text, "up", **kw)


async def reply_of(adapter: Any, req: ChatRequest) -> tuple[list[dict[str, Any]], Reply]:
    events = await adapter_events(adapter, req)
    reply = Reply()
    reply.extend(events)
    return events, reply


@pytest.fixture
def upstream(fake_openai: tuple[FakeOpenAI, str]) -> tuple[FakeOpenAI, str]:
    fake_openai[0].reset()
    return fake_openai


def sent(fake: FakeOpenAI) -> dict[str, Any]:
    return fake.requests[-1]["body"]


async def test_text_usage_and_a_stateless_body(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one two"}]
    req = ChatRequest(provider="up", messages=messages, params={"temperature": 0.2, "stop": ["x"]}, user="u1")
    _, reply = await reply_of(create_adapter(config(url)), req)
    assert reply.content == "one two " and reply.finish_reason == "stop"
    assert reply.usage == {"input_tokens": 7, "output_tokens": 4, "cache_read_tokens": 2, "reasoning_tokens": 1}
    assert fake.requests[-1]["path"] == "/v1/responses"
    assert sent(fake) == {
        "model": "fake",
        "stream": True,
        "input": [{"type": "message", "role": "user", "content": "one two"}],
        "instructions": "Be brief.",
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "temperature": 0.2,
        "user": "u1",
    }  # ``stop`` has no Responses field: sent, it would be a 400 "Unknown parameter"


async def test_chat_completions_stays_the_default(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(ProviderConfig(provider_id="up", provider_type="openai", model="fake", base_url=url))
    assert adapter.config.api == "chat_completions"
    await adapter_events(adapter, request())
    assert fake.requests[-1]["path"] == "/v1/chat/completions"


async def test_parallel_tool_calls_with_flat_tools(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    params = {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    events, reply = await reply_of(create_adapter(config(url)), request(model="fake-parallel-tools", params=params))
    starts = [(e["index"], e["tool_call_id"], e["name"]) for e in events if e["type"] == "tool-call-start"]
    assert starts == [(0, "call_a", "get_weather"), (1, "call_b", "get_weather")]
    ends = [(e["index"], e["arguments"]) for e in events if e["type"] == "tool-call-end"]
    assert ends == [(0, '{"city": "Paris"}'), (1, '{"city": "Rome"}')]
    assert reply.finish_reason == "tool_calls" and reply.tool_calls[1]["function"]["arguments"] == '{"city": "Rome"}'
    [tool] = sent(fake)["tools"]
    assert tool == {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER_TOOL["function"]["parameters"],
        "strict": False,
    }
    assert sent(fake)["tool_choice"] == {"type": "function", "name": "get_weather"}


async def test_a_tool_round_trip(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(config(url))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    _, first = await reply_of(
        adapter, ChatRequest("up", messages, model="fake-tools", params={"tools": [WEATHER_TOOL]})
    )
    assert first.finish_reason == "tool_calls"
    messages += [first.assistant_message(), {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"}]
    _, second = await reply_of(
        adapter, ChatRequest("up", messages, model="fake-tools", params={"tools": [WEATHER_TOOL]})
    )
    assert second.content == "Tool said: sunny" and second.finish_reason == "stop"
    assert sent(fake)["input"][1:] == [
        {"type": "function_call", "call_id": "call_abc", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_abc", "output": "sunny"},
    ]


async def test_encrypted_reasoning_goes_back_on_the_next_turn(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    adapter = create_adapter(config(url))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "think it over"}]
    params = {"reasoning_effort": "low"}
    events, reply = await reply_of(adapter, ChatRequest("up", messages, model="fake-reasoning", params=params))
    assert sent(fake)["reasoning"] == {"effort": "low", "summary": "auto"}
    [closing] = [e for e in events if e.get("encrypted_content")]
    assert closing["content"] == "" and closing["item_id"].startswith("rs_")
    assert reply.reasoning_content == "think more" and reply.content == "think it over"
    assert reply.thinking_blocks == [
        {
            "type": "reasoning",
            "id": closing["item_id"],
            "summary": [{"type": "summary_text", "text": "think more"}],
            "encrypted_content": closing["encrypted_content"],
        }
    ]
    assert decrypt(closing["encrypted_content"]) == {"id": closing["item_id"], "summary": "think more"}
    # Anthropic's wire reads only its own blocks: the Messages body shows the summary unsigned, the request drops it
    assert anthropic_message(reply, "m")["content"][0] == {
        "type": "thinking",
        "thinking": "think more",
        "signature": "",
    }
    history = ChatRequest("up", [*messages, reply.assistant_message()], params={"reasoning_effort": "low"})
    [assistant] = [m for m in to_anthropic_request(history, "m", 4096)["messages"] if m["role"] == "assistant"]
    assert assistant["content"] == [{"type": "text", "text": "think it over"}]
    messages += [reply.assistant_message(), {"role": "user", "content": "and now?"}]
    _, again = await reply_of(adapter, ChatRequest("up", messages, model="fake-reasoning", params=params))
    assert again.content == "and now?"
    replayed = sent(fake)["input"]
    assert replayed[1] == reply.thinking_blocks[0]  # encrypted content intact, ahead of the turn's text
    assert replayed[2] == {"type": "message", "role": "assistant", "content": "think it over"}


async def test_reasoning_without_a_summary_still_closes_its_item(upstream: tuple[FakeOpenAI, str]) -> None:
    events, reply = await reply_of(create_adapter(config(upstream[1])), request("x", model="fake-reasoning"))
    assert "reasoning" not in sent(upstream[0])  # no effort asked: models without reasoning reject the field
    assert [e["content"] for e in events if e["type"] == "reasoning-delta"] == [""]
    [block] = reply.thinking_blocks
    assert block["type"] == "reasoning" and block["summary"] == [] and block["encrypted_content"]


def test_the_translation_of_messages_parts_and_a_reasoning_only_turn() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "r.pdf"}}
    cut = {"type": "reasoning", "id": "rs_9", "summary": [], "encrypted_content": "gAAAAAx"}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Look"}, image, pdf]},
        {"role": "assistant", "content": "", "thinking_blocks": [cut]},  # cut by its limit: nothing to follow it
        {"role": "system", "content": "Now in French."},
        {"role": "user", "content": "Encore"},
    ]
    body = responses_body({"response_format": {"type": "json_object"}, "top_k": 3, "seed": 1}, messages)
    assert body["instructions"] == "Be brief." and body["text"] == {"format": {"type": "json_object"}}
    assert body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
                {"type": "input_file", "file_data": pdf["file"]["file_data"], "filename": "r.pdf"},
            ],
        },
        {"type": "message", "role": "developer", "content": "Now in French."},
        {"type": "message", "role": "user", "content": "Encore"},
    ]
    assert "top_k" not in body and "seed" not in body


def test_terminal_events_and_failure_codes() -> None:
    filtered = ResponsesStream("up")
    done = {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}, "usage": None}
    assert filtered.feed({"type": "response.incomplete", "response": done}) == []
    assert filtered.close() == [{"type": "finish", "reason": "content_filter"}]
    error = {"type": "error", "sequence_number": 3, "code": "rate_limit_exceeded", "message": "slow", "param": None}
    with pytest.raises(RateLimited, match="up: upstream error: slow"):
        ResponsesStream("up").feed(error)
    failed = {"type": "response.failed", "response": {"error": {"code": "invalid_prompt", "message": "no"}}}
    with pytest.raises(InvalidRequest) as invalid:
        ResponsesStream("up").feed(failed)
    assert invalid.value.code == "invalid_prompt"


async def test_max_output_tokens_ends_with_finish_length(upstream: tuple[FakeOpenAI, str]) -> None:
    text = " ".join(f"w{i}" for i in range(20))
    _, reply = await reply_of(create_adapter(config(upstream[1])), request(text, params={"max_tokens": 16}))
    assert reply.finish_reason == "length" and reply.content.split() == text.split()[:16]
    assert sent(upstream[0])["max_output_tokens"] == 16


async def test_citations(upstream: tuple[FakeOpenAI, str]) -> None:
    events, reply = await reply_of(create_adapter(config(upstream[1])), request(model="fake-citations"))
    assert reply.content == "Hello world"
    assert [e for e in events if e["type"] == "citation"] == [
        {"type": "citation", "url": "https://example.com", "title": "Example", "start_index": 0, "end_index": 5}
    ]


async def test_structured_output_goes_in_text_format_and_is_validated(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    runtime = ProviderRuntime(config(url), LoadGauge())
    req = request('{"name": "Ada"}', params={"response_format": PERSON})
    events = [e async for batch in runtime.stream(req) for e in batch]
    assert orjson.loads("".join(e["content"] for e in events if e["type"] == "text-delta")) == {"name": "Ada"}
    assert events[-1] == {"type": "finish", "reason": "stop"}
    schema = PERSON["json_schema"]
    assert sent(fake)["text"] == {
        "format": {"type": "json_schema", "name": "Person", "schema": schema["schema"], "strict": True}
    }
    await runtime.aclose()


async def test_upstream_errors_map_to_relay_errors(upstream: tuple[FakeOpenAI, str]) -> None:
    adapter = create_adapter(config(upstream[1]))
    with pytest.raises(InvalidRequest) as invalid:  # OpenAI's minimum, enforced by the fake
        await adapter_events(adapter, request(params={"max_tokens": 5}))
    assert invalid.value.param == "max_output_tokens" and invalid.value.code == "integer_below_min_value"
    with pytest.raises(RateLimited) as limited:
        await adapter_events(adapter, request(model="fake-status-429"))
    assert limited.value.retry_after == 2.0 and limited.value.message.startswith("up: upstream 429")
    with pytest.raises(ProviderError, match="up: upstream 500"):
        await adapter_events(adapter, request(model="fake-500"))


async def test_a_wrong_key_is_a_401_that_never_repeats_the_key() -> None:
    with ServerThread(FakeOpenAI(api_key=KEY).app) as server:
        adapter = create_adapter(config(server.url + "/v1", api_key="sk-proj-wrongkey000000000wxyz"))
        with pytest.raises(AuthenticationFailed) as exc:
            await adapter_events(adapter, request())
        await adapter.aclose()
    assert exc.value.code == "invalid_api_key" and "wxyz" not in exc.value.message


async def test_a_rate_limit_is_retried_by_relay_not_the_sdk(upstream: tuple[FakeOpenAI, str]) -> None:
    fake, url = upstream
    runtime = ProviderRuntime(config(url, max_retries=2, retry_base_s=0), LoadGauge())
    assert runtime._adapter().client.max_retries == 0  # type: ignore[attr-defined]
    events = [e async for batch in runtime.stream(request("retry me", model="fake-flaky-2")) for e in batch]
    assert [e["status"] for e in events if e["type"] == "status"] == ["retrying", "retrying"]
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "retry me "
    assert [r["path"] for r in fake.requests] == ["/v1/responses"] * 3
    await runtime.aclose()


async def test_a_failed_response_and_a_cut_connection_raise(upstream: tuple[FakeOpenAI, str]) -> None:
    adapter = create_adapter(config(upstream[1]))
    for model, match in (("fake-midstream-error", "upstream error: upstream broke"), ("fake-drop", "connection")):
        seen: list[str] = []
        with pytest.raises(ProviderError, match=match):
            async for event in adapter.stream_chat(request("this gets cut", model=model)):
                seen.append(event["type"])
        assert "text-delta" in seen


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, fake_openai: tuple[FakeOpenAI, str]) -> LocalBackend:
    common = {"max_retries": 1, "retry_base_s": 0.0, "api": "responses", "api_key": "sk-o"}
    providers = [
        ProviderConfig(provider_id="resp", provider_type="openai", base_url=fake_openai[1], **common),
        ProviderConfig(
            provider_id="az",
            provider_type="azure",
            base_url=fake_openai[1].removesuffix("/v1"),
            deployment="relay-deploy",
            **common,
        ),
    ]
    path = Path(tmp_path_factory.mktemp("responses")) / "relay.db"
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


async def turn(backend: LocalBackend, req: ChatRequest, session_id: str | None = None) -> tuple[list[Any], str]:
    opened = await backend.open_run(session_id=session_id, user_id="responses", request=req)
    events = [event async for batch in opened.batches for event in batch]
    for event in events:
        EVENT_ADAPTER.validate_python(event)
    return events, opened.session_id


async def test_a_session_keeps_the_reasoning_and_sends_it_back(
    backend: LocalBackend, upstream: tuple[FakeOpenAI, str]
) -> None:
    fake = upstream[0]
    ask = ChatRequest("resp", [{"role": "user", "content": "ponder"}], model="fake-reasoning")
    events, session_id = await turn(backend, ask)
    [closing] = [e for e in events if e.get("encrypted_content")]
    follow = ChatRequest("resp", [{"role": "user", "content": "go on"}], model="fake-reasoning")
    events, _ = await turn(backend, follow, session_id)
    assert events[-1]["reason"] == "stop"
    [reasoning] = [item for item in sent(fake)["input"] if item["type"] == "reasoning"]
    assert reasoning["encrypted_content"] == closing["encrypted_content"] and reasoning["id"] == closing["item_id"]


async def test_a_midstream_failure_is_an_error_event(backend: LocalBackend, upstream: tuple[FakeOpenAI, str]) -> None:
    events, _ = await turn(
        backend, ChatRequest("resp", [{"role": "user", "content": "x"}], model="fake-midstream-error")
    )
    assert [e["type"] for e in events][-2:] == ["error", "finish"] and "upstream broke" in events[-2]["message"]


async def test_azure_calls_its_responses_path_with_the_deployment(
    backend: LocalBackend, upstream: tuple[FakeOpenAI, str]
) -> None:
    events, _ = await turn(backend, ChatRequest("az", [{"role": "user", "content": "via azure"}]))
    assert "".join(e["content"] for e in events if e["type"] == "text-delta") == "via azure "
    record = upstream[0].requests[-1]
    assert record["path"] == "/openai/responses" and record["headers"]["api-key"] == "sk-o"
    assert record["body"]["model"] == "relay-deploy"


def test_api_is_only_for_openai_and_azure() -> None:
    with pytest.raises(ValidationError) as exc:
        ProviderConfig(provider_id="claude", provider_type="anthropic", api="responses")
    error = validation_error(exc.value)
    assert error.status_code == 400 and error.param == "api" and "openai or azure" in error.message
    audio = {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}
    with pytest.raises(UnsupportedFeature, match="audio"):  # the Responses API takes no audio parts
        check_features(
            config("http://127.0.0.1:9/v1"), ChatRequest("up", [{"role": "user", "content": [audio]}])
        )


# The fake itself: the SDK's own helper and the API's validation.


@pytest.fixture
def client(upstream: tuple[FakeOpenAI, str]) -> Iterator[openai.AsyncOpenAI]:
    yield openai.AsyncOpenAI(base_url=upstream[1], api_key="sk-x", max_retries=0)


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("fake", {}),
        (
            "fake-reasoning",
            {"reasoning": {"effort": "low", "summary": "auto"}, "include": ["reasoning.encrypted_content"]},
        ),
        ("fake-parallel-tools", {"tools": [FLAT_WEATHER]}),
        ("fake-citations", {}),
        ("fake", {"input": " ".join(["w"] * 20), "max_output_tokens": 16}),
    ],
)
async def test_the_sdk_stream_helper_accepts_the_fakes_streams(
    client: openai.AsyncOpenAI, model: str, extra: dict[str, Any]
) -> None:
    fields = {"model": model, "input": "hello there"} | extra
    async with client.responses.stream(**fields) as stream:
        events = [event async for event in stream]  # the helper checks the ordering as it accumulates
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == f"response.{final.status}" and final.status in ("completed", "incomplete")
    usage = final.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 4, 11)
    assert (usage.input_tokens_details.cached_tokens, usage.output_tokens_details.reasoning_tokens) == (2, 1)
    assert all(event.response.usage is None for event in events[:2])  # type: ignore[union-attr]
    whole = await client.responses.create(**fields)  # streamed or not, one reply
    assert (whole.status, whole.output_text, whole.usage) == (final.status, final.output_text, final.usage)
    assert [item.type for item in whole.output] == [item.type for item in final.output]


async def test_the_fakes_sequences_are_those_of_responses_md(upstream: tuple[FakeOpenAI, str]) -> None:
    ask = {"stream": True, "input": "hi", "reasoning": {"summary": "auto"}, "include": ["reasoning.encrypted_content"]}
    async with httpx2.AsyncClient() as http:
        thought = await http.post(upstream[1] + "/responses", json=ask | {"model": "fake-reasoning"})
        called = await http.post(
            upstream[1] + "/responses", json={"model": "fake-tools", "input": "hi", "stream": True}
        )
    assert "[DONE]" not in thought.text and thought.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[6:]) for line in thought.text.splitlines() if line.startswith("data: ")]
    summary = ["reasoning_summary_part.added", *["reasoning_summary_text.delta"] * 2, "reasoning_summary_text.done"]
    text = ["content_part.added", "output_text.delta", "output_text.done", "content_part.done"]
    assert [e["type"].removeprefix("response.") for e in events] == [
        *("created", "in_progress", "output_item.added", *summary, "reasoning_summary_part.done", "output_item.done"),
        *("output_item.added", *text, "output_item.done", "completed"),
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [bool(e.get("response", {}).get("usage")) for e in events].count(True) == 1 and events[-1]["response"][
        "usage"
    ]
    assert decrypt(events[8]["item"]["encrypted_content"]) == {"id": events[2]["item"]["id"], "summary": "think more"}
    calls = [orjson.loads(line[6:]) for line in called.text.splitlines() if line.startswith("data: ")]
    assert [e["type"].removeprefix("response.") for e in calls] == [
        *("created", "in_progress", "output_item.added", *["function_call_arguments.delta"] * 3),
        *("function_call_arguments.done", "output_item.done", "completed"),
    ]
    assert calls[2]["item"] == {
        "id": "fc_abc",
        "type": "function_call",
        "status": "in_progress",
        "arguments": "",
        "call_id": "call_abc",
        "name": "get_weather",
    }
    assert {e.get("item_id") for e in calls[3:6]} == {"fc_abc"}


async def test_a_failed_stream_ends_with_response_failed_alone(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="fake-midstream-error", input="x") as stream:
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed" and "error" not in kinds


async def test_the_fake_validates_input_like_openai(client: openai.AsyncOpenAI) -> None:
    orphan = [{"type": "function_call_output", "call_id": "call_zz", "output": "1"}]
    unanswered = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    bare = [{"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "assistant", "content": "hi"}]
    forged = [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAAnope"}, bare[1]]
    chat_tool = {"tools": [WEATHER_TOOL]}
    cases: list[tuple[dict[str, Any], type[Exception], str | None, str]] = [
        ({"input": orphan}, openai.BadRequestError, "input", "No tool call found for function call output"),
        ({"input": [unanswered]}, openai.BadRequestError, "input", "No tool output found for function call c"),
        ({"input": bare, "store": False}, openai.NotFoundError, "input", "not persisted when `store` is set to false"),
        ({"input": forged}, openai.BadRequestError, None, "could not be verified"),
        ({"input": "x", **chat_tool}, openai.BadRequestError, "tools[0].name", "Missing required parameter"),
        ({"input": "x", "extra_body": {"stop": ["x"]}}, openai.BadRequestError, "stop", "Unknown parameter"),
    ]
    for fields, error, param, message in cases:
        with pytest.raises(error) as exc:
            await client.responses.create(model="fake", **fields)
        body = exc.value.body
        assert isinstance(body, dict) and body["param"] == param and message in body["message"], fields
        assert set(orjson.loads(exc.value.response.content)["error"]) == {"message", "type", "param", "code"}
