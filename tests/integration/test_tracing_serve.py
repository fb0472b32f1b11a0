"""One trace across the three Ray processes of a request: ingress replica → session actor → pool replica.

The session's Serve app exports to the receiver in ``Relay.otlp`` (tests/integration/conftest.py).
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.integration.conftest import Relay
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SERVER, CLIENT = 2, 3  # the protobuf's SpanKind
PROMPT = "tidal charts for the northern harbour"


def test_one_trace_crosses_ingress_session_actor_and_pool(relay: Relay) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    body = {"model": "claude", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    headers = {"X-User-Id": "grace", "traceparent": f"00-{trace_id}-{parent}-01"}
    with httpx.stream("POST", relay.url + "/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        response.read()
    assert response.status_code == 200

    spans = wait_until(
        lambda: relay.otlp.trace(trace_id), timeout_s=60, what="three spans of the trace", done=lambda s: len(s) >= 3
    )
    assert len(spans) == 3, [span.name for span in spans]
    ingress = next(span for span in spans if span.kind == SERVER)
    run = next(span for span in spans if span.name == "relay.run")
    provider = next(span for span in spans if span.kind == CLIENT)

    assert ingress.parent_span_id == parent
    assert run.parent_span_id == ingress.span_id
    assert provider.parent_span_id == run.span_id
    # each span was made, and exported, by the process that did the work
    assert len({span.resource["process.pid"] for span in spans}) == 3
    assert {span.resource["service.name"] for span in spans} == {"relay-integration"}

    assert ingress.attributes["http.route"] == "/v1/chat/completions"
    assert ingress.attributes["http.response.status_code"] == 200
    assert run.attributes["relay.session_id"] == response.headers["x-session-id"]
    assert run.attributes["enduser.id"] == "grace"
    assert provider.attributes["gen_ai.system"] == "anthropic"
    assert provider.attributes["gen_ai.request.model"] == "fake-claude"
    assert provider.attributes["gen_ai.usage.output_tokens"] > 0
    assert provider.attributes["gen_ai.response.finish_reasons"]
    assert "gen_ai.first_token" in provider.events
    assert {span.attributes["relay.request_id"] for span in spans} == {response.headers["x-request-id"]}

    exported = relay.otlp.received_bytes()
    assert PROMPT.encode() not in exported
    assert relay.anthropic.api_key.encode() not in exported
