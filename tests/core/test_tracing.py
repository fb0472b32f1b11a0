"""OpenTelemetry traces in one process: the app over a LocalBackend exports to a real OTLP/HTTP receiver.

Tracing is turned on per test through the standard variables and
``relay.tracing.configure()``, and off again after it, so the rest of the suite
runs untraced. Spans are waited for as they reach the receiver, never slept for.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from relay import tracing
from relay.config import ProviderConfig, RelaySettings, TracingSettings
from relay.http.app import build_app
from relay.request import ChatRequest
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.waiting import wait_until

KEY = "sk-secret-7d1f0c9a5e3b"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
PROMPT = "lighthouse keepers count the waves"
SERVER, CLIENT = 2, 3  # the protobuf's SpanKind

App = Callable[..., str]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with ServerThread(FakeOpenAI(api_key=KEY).app) as server:
        yield server.url + "/v1"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    with ServerThread(receiver.app) as server:
        receiver.url = server.url  # type: ignore[attr-defined]
        yield receiver


@pytest.fixture
def traced(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """Tracing on for this test, exporting to ``receiver`` within ~50 ms of a span's end."""
    receiver.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "relay-test")
    assert tracing.configure()
    yield receiver
    monkeypatch.undo()
    assert not tracing.configure()


@pytest.fixture
def app(tmp_path: Path, upstream: str) -> Iterator[App]:
    """``app(capture_content=False)``: the URL of a fresh in-process server over ``echo`` and the keyed fake."""
    with_servers: list[ServerThread] = []

    def start(capture_content: bool = False) -> str:
        providers = [
            ProviderConfig(provider_id="echo", provider_type="echo"),
            ProviderConfig(
                provider_id="up",
                provider_type="openai",
                base_url=upstream,
                model="gpt-fake",
                api_key=KEY,
                max_retries=0,
            ),
        ]
        settings = RelaySettings(
            store_url=f"sqlite:///{tmp_path}/relay-{len(with_servers)}.db",
            providers=providers,
            tracing=TracingSettings(capture_content=capture_content),
        )
        server = ServerThread(build_app(LocalBackend(settings))).__enter__()
        with_servers.append(server)
        return server.url

    yield start
    for server in with_servers:
        server.__exit__(None, None, None)


def chat(url: str, model: str, text: str, traceparent: str | None = None) -> httpx.Response:
    headers = {"X-User-Id": "ada"} | ({"traceparent": traceparent} if traceparent else {})
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        response.read()
    return response


def three_spans(receiver: OtlpReceiver, trace_id: str | None = None) -> dict[str, ReceivedSpan]:
    """The request's ingress, run and provider spans, by role, once all three reached the receiver."""

    def spans() -> list[ReceivedSpan]:
        return receiver.trace(trace_id) if trace_id else list(receiver.spans)

    found = wait_until(spans, timeout_s=20, what="three spans exported", done=lambda s: len(s) >= 3)
    assert len(found) == 3, [span.name for span in found]
    by_role = {
        "ingress": next(span for span in found if span.kind == SERVER),
        "run": next(span for span in found if span.name == "relay.run"),
        "provider": next(span for span in found if span.kind == CLIENT),
    }
    return by_role


def test_one_trace_ingress_run_provider_under_the_clients_traceparent(traced: OtlpReceiver, app: App) -> None:
    response = chat(app(), "up", PROMPT, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    assert response.status_code == 200
    spans = three_spans(traced, CLIENT_TRACE)
    ingress, run, provider = spans["ingress"], spans["run"], spans["provider"]
    # the client's span is the root's parent; each span is the parent of the next
    assert ingress.parent_span_id == CLIENT_SPAN
    assert run.parent_span_id == ingress.span_id
    assert provider.parent_span_id == run.span_id

    assert ingress.name == "POST /v1/chat/completions"
    assert ingress.attributes["http.request.method"] == "POST"
    assert ingress.attributes["http.route"] == "/v1/chat/completions"
    assert ingress.attributes["http.response.status_code"] == 200
    assert ingress.attributes["relay.request_id"] == response.headers["x-request-id"]

    assert run.attributes["relay.session_id"] == response.headers["x-session-id"]
    assert run.attributes["relay.run_id"].startswith("run")
    assert run.attributes["enduser.id"] == "ada"
    assert run.attributes["gen_ai.response.finish_reasons"] == ["stop"]

    assert provider.name == "chat gpt-fake"
    attributes = provider.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-fake"
    assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "relay.cost_usd" not in attributes  # nothing in this run's events knows a price
    assert "gen_ai.first_token" in provider.events and "gen_ai.first_token" in run.events
    assert ingress.resource["service.name"] == "relay-test"

    exported = traced.received_bytes()
    assert PROMPT.encode() not in exported and b"lighthouse" not in exported  # no text by default
    assert KEY.encode() not in exported and b"sk-secret" not in exported


def test_without_a_traceparent_the_ingress_span_is_the_root(traced: OtlpReceiver, app: App) -> None:
    assert chat(app(), "echo", "hello there").status_code == 200
    spans = three_spans(traced)
    assert spans["ingress"].parent_span_id == ""
    assert spans["run"].parent_span_id == spans["ingress"].span_id
    assert spans["provider"].parent_span_id == spans["run"].span_id
    assert spans["provider"].attributes["gen_ai.system"] == "echo"
    assert len({span.trace_id for span in spans.values()}) == 1


def test_capture_content_records_prompt_and_reply_but_never_a_key(traced: OtlpReceiver, app: App) -> None:
    # The fake echoes the prompt: a key pasted into it would come back in the reply too.
    assert chat(app(capture_content=True), "up", f"{PROMPT} {KEY}").status_code == 200
    provider = three_spans(traced)["provider"]
    assert PROMPT in provider.attributes["gen_ai.input.messages"]
    assert '"role":"user"' in provider.attributes["gen_ai.input.messages"]
    assert "waves" in provider.attributes["gen_ai.output.messages"]
    exported = traced.received_bytes()
    assert KEY.encode() not in exported and b"sk-secret" not in exported


def test_a_failed_upstream_call_marks_the_provider_and_run_spans(traced: OtlpReceiver, app: App) -> None:
    response = chat(app(), "up/fake-status-500", PROMPT)
    assert response.status_code >= 500
    spans = three_spans(traced)
    assert spans["provider"].status_code == 2 and spans["provider"].attributes["error.type"]
    assert spans["run"].status_code == 2
    assert spans["ingress"].attributes["http.response.status_code"] == response.status_code
    assert KEY.encode() not in traced.received_bytes()


def test_a_caller_that_goes_away_ends_every_span_as_cancelled(traced: OtlpReceiver, app: App) -> None:
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "slow words"}],
        "stream": True,
        "provider_options": {"tokens_per_s": 20, "repeat": 100},
    }
    url = app() + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers={"X-User-Id": "ada"}, timeout=30) as response:
        next(response.iter_raw())  # the first chunk, then the connection closes mid-stream
    spans = three_spans(traced)
    assert spans["run"].attributes["relay.cancelled"] is True
    assert spans["provider"].attributes["relay.cancelled"] is True
    assert spans["run"].status_code == 0 and spans["provider"].status_code == 0  # a cancel is no error


def test_off_by_default_and_off_when_the_sdk_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configure()
    # Off, the run is the session's own generator: no wrapper, no span.
    request = ChatRequest(provider="echo", messages=[])
    sentinel = object()
    assert tracing.traced_run(lambda r: sentinel, request, session_id="s", user_id="u") is sentinel  # type: ignore[arg-type,return-value]
    tracing.carry(request, capture_content=True)
    assert request.traceparent is None and not request.trace_content
    assert tracing.ingress_middleware() == []


def test_off_a_whole_request_never_imports_the_sdk(tmp_path: Path) -> None:
    code = f"""
import os, sys, httpx, asyncio
for name in list(os.environ):
    if name.startswith("OTEL_"):
        del os.environ[name]
from relay.config import RelaySettings
from relay.http.app import build_app
from relay.session.local_backend import LocalBackend
app = build_app(LocalBackend(RelaySettings(store_url="sqlite:///{tmp_path}/off.db")))
async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        body = {{"model": "echo", "messages": [{{"role": "user", "content": "hi"}}]}}
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
