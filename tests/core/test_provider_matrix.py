"""Feature by provider: each real adapter, through a session and the store, against its wire-faithful fake.

Every case asserts the normalized events Relay produced, what reached the
upstream, and the run the store kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.events import EVENT_ADAPTER
from relay.http.app import build_app
from relay.reply import Reply
from relay.request import ChatRequest, Target
from relay.session.local_backend import LocalBackend
from tests.cases import PDF, PNG, WEATHER_TOOL
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

PROVIDERS = ("openai", "azure", "compat", "anthropic")
EVERY = (*PROVIDERS, "echo")
OPENAI_WIRE = ("openai", "azure", "compat")
WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA="  # a 44-byte silent WAV header
PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "Person",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    },
}


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: tuple[FakeOpenAI, str],
    fake_anthropic: tuple[FakeAnthropic, str],
) -> LocalBackend:
    openai_url, anthropic_url = fake_openai[1], fake_anthropic[1]
    common: dict[str, Any] = {"max_retries": 2, "retry_base_s": 0.01, "timeout": 5.0}
    providers = [
        ProviderConfig(provider_id="openai", provider_type="openai", base_url=openai_url, api_key="sk-o", **common),
        ProviderConfig(
            provider_id="azure",
            provider_type="azure",
            base_url=openai_url.removesuffix("/v1"),
            deployment="relay-deploy",
            api_key="az",
            **common,
        ),
        ProviderConfig(provider_id="compat", provider_type="openai_compatible", base_url=openai_url, **common),
        ProviderConfig(
            provider_id="anthropic", provider_type="anthropic", base_url=anthropic_url, api_key="sk-ant-test", **common
        ),
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
    ]
    path = Path(tmp_path_factory.mktemp("matrix")) / "relay.db"
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


def upstream_requests(provider: str, fake_openai: Any, fake_anthropic: Any) -> list[dict[str, Any]]:
    return (fake_anthropic if provider == "anthropic" else fake_openai)[0].requests


async def turn(
    backend: LocalBackend,
    provider: str,
    model: str,
    messages: list[dict[str, Any]],
    fallbacks: tuple[Target, ...] = (),
    **params: Any,
) -> tuple[list[dict[str, Any]], Reply, dict[str, Any]]:
    request = ChatRequest(provider=provider, model=model, messages=messages, params=params, fallbacks=list(fallbacks))
    opened = await backend.open_run(session_id=None, user_id="matrix", request=request)
    events = [event async for batch in opened.batches for event in batch]
    for event in events:
        EVENT_ADAPTER.validate_python(event)
    assert [e["type"] for e in events].count("finish") == 1 and events[-1]["type"] == "finish"
    reply = Reply()
    reply.extend(events)
    [run] = backend.store.runs(opened.session_id)
    return events, reply, run


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("provider", EVERY)
async def test_text(backend: LocalBackend, provider: str) -> None:
    events, reply, run = await turn(backend, provider, "fake", user("hello matrix world"))
    assert reply.content.strip() == "hello matrix world" and reply.finish_reason == "stop"
    assert reply.usage["input_tokens"] > 0 and reply.usage["output_tokens"] > 0
    assert reply.usage.get("cache_read_tokens", 0) > 0 or provider == "echo"  # echo has no prompt cache
    assert run["status"] == "completed" and run["output"] == reply.content and run["usage"] == reply.usage
    assert events[-1]["metrics"]["provider"] == provider


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streamed_tool_call(backend: LocalBackend, provider: str) -> None:
    events, reply, run = await turn(
        backend, provider, "fake-tools", user("Weather in Paris?"), tools=[WEATHER_TOOL], tool_choice="auto"
    )
    deltas = [e["arguments_delta"] for e in events if e["type"] == "tool-call-delta"]
    assert len(deltas) >= 3 and "".join(deltas) == '{"city": "Paris"}'  # fragments, not one blob (LiteLLM #29491)
    [call] = reply.tool_call_list()
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert reply.finish_reason == "tool_calls"
    assert run["tool_calls"] == [call] and run["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_result_round_trip(
    backend: LocalBackend, provider: str, fake_openai: Any, fake_anthropic: Any
) -> None:
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    _, reply, run = await turn(backend, provider, "fake", messages, tools=[WEATHER_TOOL])
    assert reply.content == "Tool said: sunny, 21C" and run["status"] == "completed"
    sent = upstream_requests(provider, fake_openai, fake_anthropic)[-1]["body"]
    if provider == "anthropic":
        assert sent["system"] == [{"type": "text", "text": "Use tools."}]
        assert sent["messages"][1]["content"][0] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "get_weather",
            "input": {"city": "Paris"},
        }
        assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    else:
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}


@pytest.mark.parametrize("provider", EVERY)
async def test_images_by_data_uri_and_url(
    backend: LocalBackend, provider: str, fake_openai: Any, fake_anthropic: Any
) -> None:
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    _, reply, run = await turn(backend, provider, "fake", [{"role": "user", "content": content}])
    assert run["status"] == "completed" and reply.content.startswith("Describe")
    sent = upstream_requests(provider, fake_openai, fake_anthropic)[-1]["body"]["messages"][-1]["content"]
    if provider == "anthropic":
        assert sent[1]["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
        assert sent[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    elif provider != "echo":
        assert reply.content.count("[image]") == 2 and sent == content


@pytest.mark.parametrize("provider", EVERY)
async def test_audio_input(backend: LocalBackend, provider: str, fake_openai: Any, fake_anthropic: Any) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}
    content = [{"type": "text", "text": "Transcribe"}, audio]
    before = len(fake_anthropic[0].requests)
    events, reply, run = await turn(backend, provider, "fake", [{"role": "user", "content": content}])
    if provider == "anthropic":  # refused by its pool before any upstream call, naming provider and feature
        error = events[-2]
        assert (
            error["status_code"] == 400
            and "Provider 'anthropic' (anthropic) does not support audio" in error["message"]
        )
        assert len(fake_anthropic[0].requests) == before and run["status"] == "failed"
        return
    assert run["status"] == "completed" and reply.content.startswith("Transcribe")
    if provider != "echo":
        assert reply.content.strip().endswith("[audio]")
        assert (
            upstream_requests(provider, fake_openai, fake_anthropic)[-1]["body"]["messages"][-1]["content"] == content
        )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_participant_name(backend: LocalBackend, provider: str, fake_openai: Any, fake_anthropic: Any) -> None:
    await turn(backend, provider, "fake", [{"role": "user", "name": "ada", "content": "hi"}])
    sent = upstream_requests(provider, fake_openai, fake_anthropic)[-1]["body"]["messages"][-1]
    if provider == "anthropic":  # the Messages API has no names
        assert sent == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    else:
        assert sent == {"role": "user", "name": "ada", "content": "hi"}


@pytest.mark.parametrize(
    ("params", "feature"),
    [({"tools": [WEATHER_TOOL]}, "tools"), ({"response_format": {"type": "json_object"}}, "structured_output")],
)
async def test_echo_refuses_what_it_cannot_do(backend: LocalBackend, params: dict[str, Any], feature: str) -> None:
    events, _, run = await turn(backend, "echo", "echo", user("x"), **params)
    assert events[-2]["status_code"] == 400 and f"(echo) does not support {feature}" in events[-2]["message"]
    assert run["status"] == "failed"


@pytest.mark.parametrize("provider", EVERY)
async def test_pdf_file(backend: LocalBackend, provider: str, fake_openai: Any, fake_anthropic: Any) -> None:
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "r.pdf"}}
    _, _, run = await turn(
        backend, provider, "fake", [{"role": "user", "content": [{"type": "text", "text": "Sum"}, pdf]}]
    )
    assert run["status"] == "completed"
    if provider == "echo":
        return
    sent = upstream_requests(provider, fake_openai, fake_anthropic)[-1]["body"]["messages"][-1]["content"][1]
    if provider == "anthropic":
        assert sent == {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "r.pdf",
        }
    else:
        assert sent == pdf


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_is_validated(backend: LocalBackend, provider: str) -> None:
    _, reply, run = await turn(backend, provider, "fake", user('{"name": "Ada", "age": 36}'), response_format=PERSON)
    assert orjson.loads(reply.content) == {"name": "Ada", "age": 36} and reply.finish_reason == "stop"
    assert run["status"] == "completed"
    events, reply, run = await turn(backend, provider, "fake", user('{"name": "Ada"}'), response_format=PERSON)
    assert reply.error is not None and "'age' is a required property" in reply.error["message"]
    # The text streamed before the check could run; the run is failed all the same, its output kept.
    kinds = [e["type"] for e in events if e["type"] not in ("status", "usage")]
    assert kinds[0] == "text-delta" and kinds[-2:] == ["error", "finish"] and events[-1]["reason"] == "error"
    assert run["status"] == "failed" and run["output"] == reply.content
    assert run["error"]["error_type"] == "provider_error" and run["error"]["code"] == "invalid_structured_output"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_with_an_array_root(backend: LocalBackend, provider: str, fake_anthropic: Any) -> None:
    numbers = {
        "type": "json_schema",
        "json_schema": {"name": "Numbers", "schema": {"type": "array", "items": {"type": "integer"}}},
    }
    _, reply, run = await turn(backend, provider, "fake", user("[1, 2, 3]"), response_format=numbers)
    assert orjson.loads(reply.content) == [1, 2, 3] and run["status"] == "completed"
    if provider == "anthropic":  # a tool's input is an object: the array travelled as {"value": [...]}
        tool = fake_anthropic[0].requests[-1]["body"]["tools"][-1]
        assert tool["input_schema"]["properties"]["value"] == {"type": "array", "items": {"type": "integer"}}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reasoning(backend: LocalBackend, provider: str) -> None:
    model = "fake-thinking" if provider == "anthropic" else "fake-reasoning"
    _, reply, run = await turn(backend, provider, model, user("think about it"))
    assert reply.reasoning_content and run["reasoning"] == reply.reasoning_content
    assert reply.content.strip().endswith("think about it")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_citations(backend: LocalBackend, provider: str) -> None:
    _, reply, run = await turn(backend, provider, "fake-citations", user("cite it"))
    assert reply.citations and run["citations"] == reply.citations
    assert reply.citations[0].get("url") or reply.citations[0].get("cited_text")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_rate_limit_is_retried(backend: LocalBackend, provider: str) -> None:
    events, reply, run = await turn(backend, provider, "fake-flaky-1", user(f"retry {provider}"))
    assert [e["status"] for e in events if e["type"] == "status"] == ["started", "retrying"]
    assert reply.content.strip() == f"retry {provider}" and run["status"] == "completed"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_midstream_error_keeps_the_partial_text_as_interrupted(backend: LocalBackend, provider: str) -> None:
    events, reply, run = await turn(backend, provider, "fake-midstream-error", user("partial please"))
    kinds = [e["type"] for e in events]
    assert "text-delta" in kinds and kinds[-2:] == ["error", "finish"] and events[-1]["reason"] == "error"
    assert run["status"] == "interrupted" and run["output"] == reply.content and reply.content
    assert run["finish_reason"] == "error" and run["error"]["message"].startswith(f"{provider}: ")


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dropped_connection(backend: LocalBackend, provider: str) -> None:
    events, reply, run = await turn(backend, provider, "fake-drop", user("this gets cut off"))
    assert reply.content and events[-2]["type"] == "error" and "connection" in events[-2]["message"]
    assert run["status"] == "interrupted"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "error_type", "http"),
    [
        (400, "invalid_request_error", 400),
        (401, "authentication_error", 401),
        (403, "permission_error", 403),
        (404, "not_found_error", 404),
        (413, "request_too_large", 413),
        (500, "provider_error", 502),
    ],
)
async def test_provider_errors_are_normalized(
    backend: LocalBackend, provider: str, status: int, error_type: str, http: int
) -> None:
    events, _, run = await turn(backend, provider, f"fake-status-{status}", user("x"))
    error = events[-2]
    assert error["error_type"] == error_type and error["status_code"] == http
    assert run["status"] == "failed" and run["error"]["error_type"] == error_type


@pytest.fixture(scope="module")
def relay_url(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as server:
        yield server.url


async def test_openai_sdk_tool_calling_through_relay_to_anthropic(relay_url: str, fake_anthropic: Any) -> None:
    """The OpenAI-compatible ingress over a translated provider: streamed tool_calls come out right."""
    client = openai.AsyncOpenAI(base_url=relay_url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="anthropic/fake-tools",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == "toolu_01A" and calls[0].function and calls[0].function.name == "get_weather"
    assert "".join(c.function.arguments or "" for c in calls if c.function) == '{"city": "Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert fake_anthropic[0].requests[-1]["body"]["tools"][0]["name"] == "get_weather"


async def test_a_non_streamed_reply_that_breaks_its_schema_is_an_error(relay_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=relay_url + "/v1", api_key="x", max_retries=0)
    ok = await client.chat.completions.create(
        model="anthropic/fake",
        messages=[{"role": "user", "content": '{"name": "Ada", "age": 36}'}],
        response_format=PERSON,  # type: ignore[arg-type]
    )
    assert orjson.loads(ok.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(
            model="openai/fake",
            messages=[{"role": "user", "content": '{"name": 7}'}],
            response_format=PERSON,  # type: ignore[arg-type]
        )
    assert exc.value.status_code == 502 and exc.value.code == "invalid_structured_output"


async def test_anthropic_sdk_against_relays_messages_route(relay_url: str, fake_openai: Any) -> None:
    """The Anthropic-compatible ingress over an OpenAI-wire pool: the official SDK, its stream helper, tool_use."""
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=relay_url, api_key="unused", max_retries=0)
    message = await client.messages.create(
        model="compat/fake",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello from anthropic"}],
    )
    assert message.content[0].type == "text" and message.content[0].text.strip() == "hello from anthropic"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert fake_openai[0].requests[-1]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}

    async with client.messages.stream(
        model="compat/fake", max_tokens=64, messages=[{"role": "user", "content": "streamed words here"}]
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) >= 3 and "".join(pieces).strip() == "streamed words here"
    assert final.content[0].text.strip() == "streamed words here"  # type: ignore[union-attr]

    async with client.messages.stream(
        model="compat/fake-parallel-tools",
        max_tokens=64,
        tools=[{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
    ) as stream:
        final = await stream.get_final_message()
    calls = [block for block in final.content if block.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Rome"}),
    ]
    assert final.stop_reason == "tool_use"

    follow_up = await client.messages.create(
        model="compat/fake",
        max_tokens=64,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_a", "content": "sunny"}]},
        ],
    )
    assert follow_up.content[0].text == "Tool said: sunny"  # type: ignore[union-attr]
    sent = fake_openai[0].requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_a", "content": "sunny"}

    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model="compat/fake", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in bad.value.message


async def test_a_streamed_reply_that_breaks_its_schema_ends_with_an_error(relay_url: str) -> None:
    """The invalid JSON has streamed by the time it can be checked; the stream then ends in an error chunk."""
    client = openai.AsyncOpenAI(base_url=relay_url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="openai/fake",
        messages=[{"role": "user", "content": '{"name": 7}'}],
        response_format=PERSON,  # type: ignore[arg-type]
        stream=True,
    )
    text = []
    with pytest.raises(openai.APIError, match="structured output does not match the schema"):
        async for chunk in stream:
            text.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(text).strip() == '{"name": 7}'


async def test_audio_to_anthropic_is_a_400_before_any_upstream_call(relay_url: str, fake_anthropic: Any) -> None:
    client = openai.AsyncOpenAI(base_url=relay_url + "/v1", api_key="x", max_retries=0)
    before = len(fake_anthropic[0].requests)
    audio = {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as exc:
        await client.chat.completions.create(
            model="anthropic/fake",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Transcribe"}, audio]}],  # type: ignore[list-item]
        )
    assert exc.value.status_code == 400 and exc.value.param == "audio"
    assert "Provider 'anthropic' (anthropic) does not support audio" in exc.value.message
    assert len(fake_anthropic[0].requests) == before


async def test_a_fallback_without_the_feature_is_skipped_not_a_misleading_400(
    relay_url: str, backend: LocalBackend
) -> None:
    client = openai.AsyncOpenAI(base_url=relay_url + "/v1", api_key="x", max_retries=0)
    ask: dict[str, Any] = {
        "model": "anthropic/fake-status-529",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
    }
    with pytest.raises(openai.APIStatusError) as exc:
        await client.chat.completions.create(**ask, extra_body={"fallbacks": ["echo"]})
    assert exc.value.status_code == 503 and "overloaded_error" in exc.value.message  # the real failure
    served = await client.chat.completions.with_raw_response.create(**ask, extra_body={"fallbacks": ["echo", "compat"]})
    assert (served.parse().choices[0].message.content or "").strip() == "Weather in Paris?"
    [run] = backend.store.runs(served.headers["x-session-id"])
    assert run["status"] == "completed" and run["provider"] == "compat"
    fallbacks = [e["message"] for e in backend.store.run_events(run["run_id"], 0) if e.get("status") == "fallback"]
    assert "anthropic failed (overloaded_error" in fallbacks[0]
    assert "echo skipped (Provider 'echo' (echo) does not support tools); falling back to compat" in fallbacks[1]
