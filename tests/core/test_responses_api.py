"""``/v1/responses`` through the official openai SDK, in front of echo and the fake OpenAI upstream (no Ray)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread
from tests.waiting import wait_until


@pytest.fixture
def relay(tmp_path: Path, fake_openai: tuple[FakeOpenAI, str]) -> Iterator[tuple[str, FakeOpenAI]]:
    fake, url = fake_openai
    fake.reset()
    providers = [
        ProviderConfig(provider_id="echo", provider_type="echo"),
        ProviderConfig(provider_id="up", provider_type="openai", base_url=url, model="gpt-fake", api_key="sk-test"),
    ]
    settings = RelaySettings(store_url=f"sqlite:///{tmp_path}/relay.db", providers=providers)
    with ServerThread(build_app(LocalBackend(settings))) as server:
        yield server.url, fake


def client(url: str, user: str = "ada") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", default_headers={"X-User-Id": user})


def sent_texts(fake: FakeOpenAI) -> list[list[str]]:
    """The message texts each upstream call carried: the context Relay built."""
    out = []
    for record in fake.requests:
        texts = []
        for message in record["body"]["messages"]:
            content = message.get("content")
            texts.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content or ()))
        out.append(texts)
    return out


def test_create_streamed_and_not_with_the_sdk_helpers(relay: tuple[str, FakeOpenAI]) -> None:
    c = client(relay[0])
    plain = c.responses.create(model="echo", input="hello big world")
    assert plain.status == "completed" and plain.output_text == "hello big world" and plain.id.startswith("resp_")
    assert plain.usage is not None and plain.usage.output_tokens > 0
    with c.responses.stream(model="echo", input="three streamed words") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "three streamed words"
    assert c.responses.retrieve(final.id).output_text == "three streamed words"


def test_a_chain_sends_only_the_new_message_and_the_upstream_sees_the_whole_context(
    relay: tuple[str, FakeOpenAI],
) -> None:
    url, fake = relay
    c = client(url)
    first = c.responses.create(model="up", input="my name is Ada", instructions="be brief")
    second = c.responses.create(model="up", input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    contexts = sent_texts(fake)
    assert contexts[0] == ["be brief", "my name is Ada"]
    # instructions are not inherited; the first turn's input and output are
    assert contexts[1] == ["my name is Ada", first.output_text, "what is my name?"]
    items = c.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "message", "message"]
    assert items[0].content[0].text == "my name is Ada" and items[-1].content[0].text == "what is my name?"


def test_a_branch_from_an_older_response_sees_exactly_its_own_chain(relay: tuple[str, FakeOpenAI]) -> None:
    url, fake = relay
    c = client(url)
    root = c.responses.create(model="up", input="one")
    two = c.responses.create(model="up", input="two", previous_response_id=root.id)
    c.responses.create(model="up", input="three", previous_response_id=two.id)
    fake.reset()
    c.responses.create(model="up", input="branch", previous_response_id=root.id)
    assert sent_texts(fake) == [["one", root.output_text, "branch"]]


def test_twenty_concurrent_answers_to_one_response_each_see_their_own_chain(relay: tuple[str, FakeOpenAI]) -> None:
    url, _ = relay
    c = client(url)
    root = c.responses.create(model="echo", input="root")

    def answer(i: int) -> Any:
        return c.responses.create(model="echo", input=f"answer {i}", previous_response_id=root.id)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(answer, range(20)))
    assert sorted(a.output_text for a in answers) == sorted(f"answer {i}" for i in range(20))
    for i, reply in enumerate(answers):
        texts = [item.content[0].text for item in c.responses.input_items.list(reply.id, order="asc").data]
        assert texts == ["root", "root", f"answer {i}"]


def test_store_false_keeps_nothing(relay: tuple[str, FakeOpenAI]) -> None:
    url, _ = relay
    c = client(url)
    reply = c.responses.create(model="echo", input="forget me", store=False)
    assert reply.output_text == "forget me" and reply.store is False
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(reply.id)
    with pytest.raises(openai.BadRequestError) as chained:
        c.responses.create(model="echo", input="x", previous_response_id=reply.id)
    assert chained.value.body["code"] == "previous_response_not_found"
    sessions = httpx.get(url + "/api/sessions", headers={"X-User-Id": "ada"}).json()
    assert sessions["data"] == []


def test_background_then_resume_after_a_drop_gives_exact_text(relay: tuple[str, FakeOpenAI]) -> None:
    url, _ = relay
    c = client(url)
    text = " ".join(f"w{i}" for i in range(40))
    created = c.responses.create(model="echo", input=text, background=True, extra_body={"provider_options": {}})
    assert created.status == "queued"
    wait_until(lambda: c.responses.retrieve(created.id).status == "completed", timeout_s=30, what="background run")
    events = list(c.responses.retrieve(created.id, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    resumed = list(c.responses.retrieve(created.id, stream=True, starting_after=5))
    assert [e.sequence_number for e in resumed] == list(range(6, len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == text
    cancelled = c.responses.cancel(created.id)
    assert cancelled.status == "completed"  # already finished: cancel returns the final object


def test_delete_and_owner_checks(relay: tuple[str, FakeOpenAI]) -> None:
    url, _ = relay
    ada, bob = client(url, "ada"), client(url, "bob")
    reply = ada.responses.create(model="echo", input="mine")
    for call in (lambda: bob.responses.retrieve(reply.id), lambda: bob.responses.delete(reply.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError):
        bob.responses.create(model="echo", input="x", previous_response_id=reply.id)
    ada.responses.delete(reply.id)
    with pytest.raises(openai.NotFoundError):
        ada.responses.retrieve(reply.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "conversation": "conv_abc", "previous_response_id": "resp_1"}, None),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "call_nope", "output": "1"}]}, "input[0].call_id"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_the_server_keeps_serving(
    relay: tuple[str, FakeOpenAI], body: dict[str, Any], param: str | None
) -> None:
    url, _ = relay
    answer = httpx.post(url + "/v1/responses", json={"model": "echo"} | body, headers={"X-User-Id": "ada"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert client(url).responses.create(model="echo", input="still here").output_text == "still here"


def test_a_conversation_runs_in_its_session(relay: tuple[str, FakeOpenAI]) -> None:
    url, fake = relay
    c = client(url)
    conversation = c.conversations.create(items=[{"role": "user", "content": "remember blue"}])
    reply = c.responses.create(model="up", input="what colour?", conversation=conversation.id)
    assert reply.conversation is not None and reply.conversation.id == conversation.id
    assert sent_texts(fake)[-1] == ["remember blue", "what colour?"]
    listed = [item.type for item in c.conversations.items.list(conversation.id, order="asc").data]
    assert listed == ["message", "message", "message"]


def test_a_long_background_run_with_no_reader_completes(relay: tuple[str, FakeOpenAI]) -> None:
    """More events than a detached run queues for an attached reader (1024): nobody reads a background run."""
    c = client(relay[0])
    text = " ".join(f"w{i}" for i in range(1500))
    # paced: one event per token, each its own batch, as a real upstream streams them
    pace = {"provider_options": {"tokens_per_s": 20_000}}
    created = c.responses.create(model="echo", input=text, background=True, extra_body=pace)
    done = wait_until(
        lambda: c.responses.retrieve(created.id),
        timeout_s=60,
        what="the long background run",
        done=lambda response: response.status != "in_progress",
    )
    assert done.status == "completed" and done.output_text == text


def test_background_and_stream_streams_from_queued(relay: tuple[str, FakeOpenAI]) -> None:
    """§4: with background and stream, the SSE starts created (queued), queued, in_progress; not a JSON body."""
    c = client(relay[0])
    events = list(c.responses.create(model="echo", input="streamed in the background", background=True, stream=True))
    assert [(e.type, e.response.status) for e in events[:3] if e.type.startswith("response.")] == [
        ("response.created", "queued"),
        ("response.queued", "queued"),
        ("response.in_progress", "in_progress"),
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed in the background"
    resumed = list(c.responses.retrieve(events[0].response.id, stream=True, starting_after=2))
    assert [e.model_dump() for e in resumed] == [e.model_dump() for e in events[3:]]


def test_a_retrieved_response_is_encoded_as_it_was_streamed(relay: tuple[str, FakeOpenAI]) -> None:
    """Relay's own tool runs keep their ``relay`` mark on ``GET``: the encoding options are stored with the row."""
    c = client(relay[0])
    streamed = c.responses.create(
        model="up/fake-call-calculator", input="what is 6*7?", extra_body={"relay_tools": ["calculator"]}
    )
    marked = [item.model_dump() for item in streamed.output if item.type == "function_call"]
    assert marked and all(item.get("relay") == {"executed": True} for item in marked)
    retrieved = c.responses.retrieve(streamed.id)
    assert [item.model_dump() for item in retrieved.output] == [item.model_dump() for item in streamed.output]


def test_a_streamed_response_whose_client_drops_is_recorded_cancelled(relay: tuple[str, FakeOpenAI]) -> None:
    url, _ = relay
    body = {
        "model": "echo",
        "input": " ".join(f"w{i}" for i in range(200)),
        "stream": True,
        "provider_options": {"tokens_per_s": 50},
    }
    with httpx.Client(base_url=url, headers={"X-User-Id": "ada"}) as http:
        with http.stream("POST", "/v1/responses", json=body) as response:
            lines = response.iter_lines()
            created = next(line for line in lines if line.startswith("data:") and "response.created" in line)
            response_id = created.split('"id":"')[1].split('"')[0]
            next(line for line in lines if "output_text.delta" in line)
        # the connection is closed mid-stream: the run stops and is kept, marked cancelled
        final = wait_until(
            lambda: client(url).responses.retrieve(response_id),
            timeout_s=30,
            what="the dropped run to be recorded",
            done=lambda r: r.status not in ("queued", "in_progress"),
        )
    assert final.status == "cancelled"
    assert 0 < len(final.output[0].content[0].text) < len(body["input"])
