"""Server-side tools through the whole path, in-process: HTTP in, the session runs the tool, the fake gets the result.

The upstream is the fake OpenAI server (``fake-call-<tool>``: it calls the
tool with the user's JSON as arguments, then answers ``Tool said: <result>``),
so an answer that quotes the result proves the provider received it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import websockets

from relay.config import ProviderConfig, RelaySettings, ToolSettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.core.test_app import sse_events
from tests.core.test_websocket import send, until_finish
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

TEST_TOOLS = ["explode", "stall", "flood", "wait_forever", "lookup"]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, fake_openai: tuple[FakeOpenAI, str]) -> LocalBackend:
    path = Path(tmp_path_factory.mktemp("tools")) / "relay.db"
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo", model="echo"),
        ProviderConfig(
            provider_id="up", provider_type="openai_compatible", model="fake", base_url=fake_openai[1], max_retries=0
        ),
    ]
    tools = ToolSettings(functions=[f"tests.fakes.tools:{name}" for name in TEST_TOOLS], max_steps=3)
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers, tools=tools))


@pytest.fixture(scope="module")
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


def upstream_calls(fake: FakeOpenAI, marker: str) -> list[dict[str, Any]]:
    """The bodies the fake received for the conversation whose first user message contains ``marker``."""
    return [r["body"] for r in fake.requests if marker in orjson.dumps(r["body"]["messages"][0]).decode()]


async def chat(server: str, **body: Any) -> tuple[list[dict[str, Any]], str]:
    """A typed-SSE turn: (its events, its session id)."""
    headers = {"X-Session-Id": body.pop("session_id")} if "session_id" in body else {}
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        response = await http.post("/api/streaming/chat", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return sse_events(response.text), response.headers["x-session-id"]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "text-delta")


async def test_relay_runs_the_tool_and_the_provider_gets_the_result(
    server: str, backend: LocalBackend, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    question = '{"expression": "6 * 7 + 0"}'
    events, session_id = await chat(
        server,
        model="up/fake-call-calculator",
        messages=[{"role": "user", "content": question}],
        relay_tools=["calculator"],
    )
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["status", "tool-call-start", "tool-call-delta", "tool-call-delta"]
    assert kinds.index("tool-call-end") < kinds.index("tool-execution-start") < kinds.index("tool-execution-end")
    assert kinds.index("tool-execution-end") < kinds.index("text-delta")
    end = next(e for e in events if e["type"] == "tool-execution-end")
    assert end["name"] == "calculator" and end["result"] == "42" and end["step"] == 1 and "error" not in end
    assert text(events) == "Tool said: 42" and events[-1]["reason"] == "stop"

    first, second = upstream_calls(fake, "6 * 7 + 0")
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]
    assert first["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assert second["messages"][-2]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": question}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1_0", "content": "42"}

    # the tool-call history: the run's calls with arguments, results and durations; the messages in order
    [run] = backend.store.runs(session_id)
    [call] = run["tool_calls"]
    assert call["function"]["arguments"] == question and call["execution"]["result"] == "42"
    assert call["execution"]["duration_ms"] >= 0 and call["execution"]["step"] == 1
    assert run["status"] == "completed" and run["output"] == "Tool said: 42" and run["finish_reason"] == "stop"
    assert run["usage"]["input_tokens"] == 14 and run["usage"]["output_tokens"] == 8  # two model calls, summed
    history = [(m["role"], m.get("content"), bool(m.get("tool_calls"))) for m in backend.store.messages(session_id)]
    assert history == [
        ("user", question, False),
        ("assistant", "", True),
        ("tool", "42", False),
        ("assistant", "Tool said: 42", False),
    ]
    # the stored history is valid for the next turn: the fake refuses tool messages that answer no call
    events, _ = await chat(server, model="up/fake", session_id=session_id, messages=[{"role": "user", "content": "ok"}])
    assert text(events) == "ok " and events[-1]["reason"] == "stop"


@pytest.mark.parametrize(
    ("tool", "arguments", "error"),
    [
        ("explode", {"reason": "disk on fire"}, "RuntimeError: disk on fire"),
        ("stall", {}, "the tool timed out after 0.3 s"),
        ("flood", {}, "the tool's output is 1,000,000 characters, over the limit of 16,384"),
    ],
)
async def test_a_failing_tool_is_an_error_the_model_is_told_about(
    server: str, backend: LocalBackend, tool: str, arguments: dict[str, Any], error: str
) -> None:
    events, session_id = await chat(
        server,
        model=f"up/fake-call-{tool}",
        messages=[{"role": "user", "content": orjson.dumps(arguments).decode()}],
        relay_tools=[tool],
    )
    end = next(e for e in events if e["type"] == "tool-execution-end")
    assert end["error"] == error and "result" not in end
    assert text(events) == f"Tool said: Error: {error}" and events[-1]["reason"] == "stop"
    [run] = backend.store.runs(session_id)
    assert run["status"] == "completed" and run["tool_calls"][0]["execution"]["error"] == error
    tool_message = backend.store.messages(session_id)[2]
    assert tool_message["role"] == "tool" and tool_message["is_error"] is True


async def test_the_step_limit_ends_a_model_that_never_stops_calling(
    server: str, backend: LocalBackend, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    events, session_id = await chat(
        server,
        model="up/fake-loop-lookup",
        messages=[{"role": "user", "content": '{"key": "loop-marker"}'}],
        relay_tools=["lookup"],
    )
    assert len(upstream_calls(fake, "loop-marker")) == 3  # max_steps model calls, not one more
    ends = [e for e in events if e["type"] == "tool-execution-end"]
    assert [e["step"] for e in ends] == [1, 2, 3] and all(e["result"] for e in ends)
    assert [e["index"] for e in events if e["type"] == "tool-call-start"] == [0, 1, 2]  # unique within the run
    warning = next(e for e in events if e["type"] == "warning")
    assert warning["code"] == "max_steps" and events[-1]["reason"] == "length"
    [run] = backend.store.runs(session_id)
    assert len(run["tool_calls"]) == 3 and run["status"] == "completed"
    events, _ = await chat(server, model="up/fake", session_id=session_id, messages=[{"role": "user", "content": "go"}])
    assert text(events) == "go "  # three answered calls in the history: still valid upstream


async def test_a_tool_not_registered_server_side_passes_through_to_the_client(
    server: str, fake_openai: tuple[FakeOpenAI, str]
) -> None:
    fake, _ = fake_openai
    client = openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)
    arguments = {"calculator": {"expression": "2 ** 5"}, "get_weather": {"city": "Oslo"}}
    completion = await client.chat.completions.with_raw_response.create(
        model="up/fake-call-calculator+get_weather",
        messages=[{"role": "user", "content": orjson.dumps(arguments).decode()}],
        tools=[WEATHER],  # type: ignore[list-item]
        extra_body={"relay_tools": ["calculator"]},
    )
    parsed = completion.parse()
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []  # the server-side call is not the client's to answer
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"city": "Oslo"}
    session_id = completion.headers["x-session-id"]
    answered = await client.chat.completions.create(
        model="up/fake",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny"}],
        extra_headers={"X-Session-Id": session_id},
    )
    assert answered.choices[0].message.content == "Tool said: sunny"
    last = upstream_calls(fake, "2 ** 5")[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "tool"]
    assert last[2]["content"] == "32"  # Relay answered its own call; the client answered the other

    # a tool the turn did not enable is the client's, as before server-side tools existed
    plain = await client.chat.completions.create(
        model="up/fake-call-calculator",
        messages=[{"role": "user", "content": '{"expression": "1 + 1"}'}],
        tools=[{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}],
    )
    assert plain.choices[0].finish_reason == "tool_calls" and plain.choices[0].message.tool_calls


async def test_the_openai_stream_shows_relays_tool_events_only_to_a_client_that_opts_in(server: str) -> None:
    client = openai.AsyncOpenAI(api_key="unused", base_url=server + "/v1", max_retries=0)

    async def chunks(opt_in: bool) -> list[Any]:
        stream = await client.chat.completions.create(
            model="up/fake-call-calculator",
            messages=[{"role": "user", "content": '{"expression": "3 * 3"}'}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"relay_tools": ["calculator"], "relay_events": opt_in},
        )
        return [chunk async for chunk in stream]

    plain = await chunks(False)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "Tool said: 9"
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in plain)
    assert not any((c.model_extra or {}).get("relay_event") for c in plain)
    assert plain[-2].choices[0].finish_reason == "stop"
    assert plain[-1].usage is not None and plain[-1].usage.prompt_tokens == 14  # both model calls

    opted = await chunks(True)
    relayed = [(c.model_extra or {})["relay_event"] for c in opted if (c.model_extra or {}).get("relay_event")]
    kinds = [event["type"] for event in relayed]
    assert kinds[0] == "tool-call-start" and kinds[-2:] == ["tool-execution-start", "tool-execution-end"]
    assert relayed[-1]["result"] == "9"
    assert "".join(c.choices[0].delta.content or "" for c in opted if c.choices) == "Tool said: 9"

    completion = await client.chat.completions.create(
        model="up/fake-call-calculator",
        messages=[{"role": "user", "content": '{"expression": "3 * 3"}'}],
        extra_body={"relay_tools": ["calculator"], "relay_events": True},
    )
    assert completion.choices[0].message.tool_calls is None
    [executed] = (completion.choices[0].message.model_extra or {})["relay_tool_calls"]
    assert executed["execution"]["result"] == "9"


async def test_a_session_enables_its_tools(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, headers={"X-User-Id": "sam"}) as http:
        created = await http.post("/api/sessions", json={"session_data": {"relay_tools": ["calculator"]}})
        session_id = created.json()["session_id"]
        response = await http.post(
            "/api/streaming/chat",
            headers={"X-Session-Id": session_id},
            json={
                "model": "up/fake-call-calculator",
                "messages": [{"role": "user", "content": '{"expression": "5+5"}'}],
            },
        )
        assert text(sse_events(response.text)) == "Tool said: 10"
        response = await http.post(  # the request's own list wins: none enabled, so the call is the client's
            "/api/streaming/chat",
            headers={"X-Session-Id": session_id},
            json={
                "model": "up/fake-call-calculator",
                "messages": [{"role": "user", "content": '{"expression": "1"}'}],
                "relay_tools": [],
            },
        )
        assert sse_events(response.text)[-1]["reason"] == "tool_calls"
        other = await http.post(  # another user's session lends nothing: their turn is refused as not found
            "/api/streaming/chat",
            headers={"X-Session-Id": session_id, "X-User-Id": "eve"},
            json={"model": "up/fake", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert other.status_code == 404


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "up/fake", "relay_tools": ["teleport"]}, "relay_tools[0]", "Unknown tool 'teleport'"),
        (
            {
                "model": "up/fake",
                "relay_tools": ["calculator"],
                "tools": [{"type": "function", "function": {"name": "calculator"}}],
            },
            "tools[0]",
            "both the client's and a server-side tool",
        ),
        ({"model": "echo", "relay_tools": ["calculator"]}, "tools", "does not support tools"),
        ({"model": "up/fake", "relay_tools": "calculator"}, "relay_tools", "valid list"),
    ],
)
async def test_bad_tool_requests_are_refused_before_any_upstream_call(
    server: str, body: dict[str, Any], param: str, message: str
) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        response = await http.post("/v1/chat/completions", json=body | {"messages": [{"role": "user", "content": "x"}]})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and message in error["message"]


async def test_a_cancelled_run_answers_its_unfinished_tool_and_the_session_goes_on(
    server: str, backend: LocalBackend
) -> None:
    url = server.replace("http://", "ws://")
    async with websockets.connect(f"{url}/api/streaming/ws/tia") as ws:
        await send(
            ws,
            "chat_request",
            "r1",
            messages=[{"role": "user", "content": "{}"}],
            options={"model": "up/fake-call-forever", "relay_tools": ["forever"]},
        )
        session_id = None
        async for raw in ws:
            message = orjson.loads(raw)
            data = message["data"]
            session_id = data.get("session_id") or session_id
            if data.get("event_type") == "tool-execution-start":
                await send(ws, "cancel", "r1")
            if data.get("event_type") == "finish":
                assert data["event_data"]["reason"] == "cancelled"
                break
        assert session_id is not None
        [run] = backend.store.runs(session_id)
        assert run["status"] == "cancelled"
        tool_message = backend.store.messages(session_id)[-1]
        assert tool_message["role"] == "tool" and tool_message["content"].startswith("Error: the run stopped")
        await send(
            ws,
            "chat_request",
            "r2",
            messages=[{"role": "user", "content": "again"}],
            options={"model": "up/fake", "session_id": session_id},
        )
        reply = await until_finish(ws, "r2")
    assert reply[-1]["data"]["event_data"]["reason"] == "stop"
