"""``/v1/responses`` through the framework clients that default to it (RESPONSES.md §6), with no Ray.

The OpenAI Agents SDK's default model and LangChain's ``ChatOpenAI(use_responses_api=True)``, each against
Relay in front of the fake OpenAI and the fake Anthropic upstreams (``fake-tools`` calls the first tool offered
with ``{"city": "Paris"}``, then answers ``Tool said: <result>``), plus the openai SDK in front of Anthropic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

USER = {"X-User-Id": "ada"}
# Both fakes call the first tool offered for the model ``fake-tools``, then answer with the tool's result. The pools
# ``up_tools`` and ``claude_tools`` serve it by default: the Agents SDK refuses a ``pool/model`` name ("Unknown
# prefix") unless its MultiProvider is told to pass unknown prefixes through.
TOOL_MODELS = ["up_tools", "claude_tools"]


@pytest.fixture
def relay(
    tmp_path: Path, fake_openai: tuple[FakeOpenAI, str], fake_anthropic: tuple[FakeAnthropic, str]
) -> Iterator[str]:
    (upstream, upstream_url), (anthropic, anthropic_url) = fake_openai, fake_anthropic
    upstream.reset()
    openai_up = {"provider_type": "openai", "base_url": upstream_url, "api_key": "sk-test"}
    claude = {"provider_type": "anthropic", "base_url": anthropic_url, "api_key": anthropic.api_key}
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo"),
        ProviderConfig(provider_id="up", model="gpt-fake", **openai_up),
        ProviderConfig(provider_id="up_tools", model="fake-tools", **openai_up),
        ProviderConfig(provider_id="claude", model="fake-claude", **claude),
        ProviderConfig(provider_id="claude_tools", model="fake-tools", **claude),
    ]
    settings = RelaySettings(store_url=f"sqlite:///{tmp_path}/relay.db", providers=providers)
    with ServerThread(build_app(LocalBackend(settings))) as server:
        yield server.url + "/v1"


# -- the OpenAI Agents SDK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_agents_sdk_calls_a_tool_and_chains_by_previous_response_id(relay: str, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=relay, api_key="unused", default_headers=USER, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model)
    # Server-managed: the second model call sends only the function_call_output, chained by previous_response_id.
    result = await Runner.run(agent, "Weather in Paris?", auto_previous_response_id=True)
    assert calls == ["Paris"]
    assert result.final_output == "Tool said: sunny in Paris"
    first, second = result.raw_responses
    assert first.response_id is not None and second.response_id is not None
    chained = await client.responses.retrieve(second.response_id)
    assert chained.previous_response_id == first.response_id
    sent = await client.responses.input_items.list(second.response_id, order="asc")
    # this turn's input is the tool's output alone; the chain's first turn (input, then call) comes before it
    assert [item.type for item in sent.data][-2:] == ["function_call", "function_call_output"]


@pytest.mark.parametrize("model", TOOL_MODELS)
async def test_agents_sdk_streams_a_tool_round_trip_in_a_conversation(relay: str, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=relay, api_key="unused", default_headers=USER, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"windy in {city}"

    conversation = await client.conversations.create()
    agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model)
    streamed = Runner.run_streamed(agent, "Weather in Paris?", conversation_id=conversation.id)
    kinds = [event.type async for event in streamed.stream_events()]
    assert "run_item_stream_event" in kinds
    assert calls == ["Paris"]
    assert streamed.final_output == "Tool said: windy in Paris"
    items = (await client.conversations.items.list(conversation.id, order="asc")).data
    # the fake Anthropic says "Let me check." before its tool_use: one assistant message more
    kinds = [item.type for item in items]
    assert kinds[0] == "message" and kinds[-3:] == ["function_call", "function_call_output", "message"]
    assert items[0].role == "user" and items[-1].role == "assistant"


async def test_agents_sdk_streams_a_plain_reply(relay: str) -> None:
    client = openai.AsyncOpenAI(base_url=relay, api_key="unused", default_headers=USER, max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_tracing_disabled(True)
    agent = Agent(name="echo", model="echo")
    streamed = Runner.run_streamed(agent, "three small words")
    kinds = [event.type async for event in streamed.stream_events()]
    assert "raw_response_event" in kinds
    assert streamed.final_output == "three small words"


# -- LangChain ChatOpenAI(use_responses_api=True) ---------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat_model(url: str, model: str, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=url, api_key="unused", model=model, use_responses_api=True, default_headers=USER, **options
    )


def test_langchain_streams_plain_text(relay: str) -> None:
    chunks = list(chat_model(relay, "echo").stream("hello from langchain"))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    message = sum(chunks[1:], chunks[0])
    assert message.text == "hello from langchain"
    assert message.response_metadata["id"].startswith("resp_")


@pytest.mark.parametrize("model", TOOL_MODELS)
def test_langchain_streams_a_bound_tool_call_then_answers_its_result(relay: str, model: str) -> None:
    bound = chat_model(relay, model).bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    chunks = list(bound.stream([question]))
    call_chunks = [chunk for chunk in chunks if chunk.tool_call_chunks]
    assert call_chunks, "no streamed tool_call_chunks"
    message = sum(chunks[1:], chunks[0])
    assert isinstance(message, AIMessageChunk)
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"} and call["id"]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    # Full replay (LangChain's default): the function_call item comes back as input with its fc_ id
    answer = bound.invoke([question, message, result])
    assert answer.text == "Tool said: sunny in Paris"


def test_langchain_chains_by_previous_response_id(relay: str) -> None:
    model = chat_model(relay, "up_tools", use_previous_response_id=True).bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    first = model.invoke([question])
    assert isinstance(first, AIMessage) and first.response_metadata["id"].startswith("resp_")
    [call] = first.tool_calls
    result = ToolMessage("cloudy in Paris", tool_call_id=call["id"])
    # Only the ToolMessage goes out, with previous_response_id: the call it answers is in the stored chain
    second = model.invoke([question, first, result])
    assert second.text == "Tool said: cloudy in Paris"
    chained = openai.OpenAI(base_url=relay, api_key="unused", default_headers=USER).responses.retrieve(
        second.response_metadata["id"]
    )
    assert chained.previous_response_id == first.response_metadata["id"]


# -- the openai SDK in front of Anthropic -----------------------------------------------------------------------------


def test_openai_sdk_in_front_of_anthropic_text_and_a_streamed_tool_call(relay: str) -> None:
    client = openai.OpenAI(base_url=relay, api_key="unused", default_headers=USER, max_retries=0)
    reply = client.responses.create(model="claude", input="hello claude")
    assert reply.status == "completed" and reply.output_text.strip() == "hello claude"
    tools: list[Any] = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
        }
    ]
    with client.responses.stream(model="claude_tools", input="Weather in Paris?", tools=tools) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city": "Paris"}' and call.id and call.call_id
    answer = client.responses.create(
        model="claude_tools",
        previous_response_id=final.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
    )
    assert answer.output_text == "Tool said: rain"
