"""Keys never reach a log line: planted keys, real traffic, every log record captured and grepped."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.auth import new_key
from relay.logs import REDACTOR, JsonFormatter, RedactingFilter, Redactor, configure_logging, request_scope
from relay.session.local_backend import LocalBackend
from relay.store import open_store
from tests.fakes.openai_upstream import FakeOpenAI, ServerThread

PROVIDER_KEY = "sk-proj-PLANTEDprovider000000000000wxyz"
ODD_KEY = "tenant-PLANTED-7f3a9c"  # a provider key of no known shape: masked because it was registered


def test_the_redactor_masks_key_shapes_headers_and_registered_secrets() -> None:
    redactor = Redactor()
    redactor.add([ODD_KEY, "short"])
    relay_key = new_key()[0]
    text = (
        f"key={relay_key} auth: Authorization: Bearer {PROVIDER_KEY} x-api-key: {ODD_KEY} "
        f'{{"api_key": "{ODD_KEY}"}} bare {PROVIDER_KEY} short words stay'
    )
    masked = redactor.redact(text)
    for secret in (relay_key, PROVIDER_KEY, ODD_KEY):
        assert secret not in masked
    assert "rk_***" in masked and "Bearer ***" in masked and "short words stay" in masked


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """configure_logging as a Ray process runs it, into a buffer; the relay logger is put back afterwards."""
    relay = logging.getLogger("relay")
    saved = (relay.handlers[:], relay.level, relay.propagate)
    relay.handlers = []
    buffer = io.StringIO()
    configure_logging([ODD_KEY], level=logging.DEBUG, stream=buffer)
    try:
        yield buffer
    finally:
        relay.handlers, relay.level, relay.propagate = saved


def test_json_lines_carry_the_request_id_and_no_key_in_message_arguments_extras_or_tracebacks(
    json_logs: io.StringIO,
) -> None:
    relay_key = new_key()[0]
    log = logging.getLogger("relay.test")
    with request_scope("req_flow_1"):
        log.info("calling with %s", f"Authorization: Bearer {relay_key}", extra={"provider_key": PROVIDER_KEY})
        try:
            raise RuntimeError(f"upstream refused key {ODD_KEY}")
        except RuntimeError:
            log.exception("provider failed")
    lines = [orjson.loads(line) for line in json_logs.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["req_flow_1", "req_flow_1"]
    assert lines[0]["logger"] == "relay.test" and lines[0]["level"] == "INFO" and "provider_key" in lines[0]
    assert "RuntimeError" in lines[1]["exc"]
    written = json_logs.getvalue()
    for secret in (relay_key, PROVIDER_KEY, ODD_KEY):
        assert secret not in written


def test_the_filter_guards_any_handler_and_third_party_loggers() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RedactingFilter())
    REDACTOR.add([ODD_KEY])
    library = logging.getLogger("some.sdk")
    library.addHandler(handler)
    library.setLevel(logging.DEBUG)
    try:
        library.debug("request headers: %s", {"x-api-key": ODD_KEY, "authorization": f"Bearer {PROVIDER_KEY}"})
        try:
            raise ValueError(PROVIDER_KEY)
        except ValueError:
            library.error("failed", exc_info=True)
    finally:
        library.removeHandler(handler)
    written = buffer.getvalue()
    assert "ValueError" in written and "request headers" in written
    assert ODD_KEY not in written and PROVIDER_KEY not in written


class Capture(logging.Handler):
    """Every record of every logger, formatted raw: what any handler could have written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


async def test_real_traffic_at_debug_level_writes_no_key_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_logs: io.StringIO
) -> None:
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    saved_level = root.level
    root.setLevel(logging.DEBUG)
    logging.getLogger("relay").addHandler(capture)  # relay.* does not propagate once configured
    monkeypatch.setenv("RELAY_TEST_PLANTED_KEY", PROVIDER_KEY)
    fake = FakeOpenAI(api_key=PROVIDER_KEY)
    try:
        with ServerThread(fake.app) as upstream:
            gpt = ProviderConfig(
                provider_id="gpt",
                provider_type="openai",
                model="fake",
                base_url=upstream.url + "/v1",
                api_key_env="RELAY_TEST_PLANTED_KEY",
                max_retries=0,
            )
            settings = RelaySettings(store_url=f"sqlite:///{tmp_path}/r.db", providers=[gpt], auth={"cache_ttl_s": 0})
            store = open_store(settings.store_url)
            user_key, digest, prefix = new_key()
            store.create_api_key("alice", digest, prefix)
            admin_key, digest, prefix = new_key()
            store.create_api_key("root", digest, prefix, is_admin=True)
            wrong_key = new_key()[0]
            with ServerThread(build_app(LocalBackend(settings))) as server:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                    chat: dict[str, Any] = {
                        "provider_id": "gpt",
                        "messages": [{"role": "user", "content": "hello"}],
                        "stream_format": "json",
                    }
                    headers = {"Authorization": f"Bearer {user_key}", "X-Request-Id": "req_traffic_1"}
                    ok = await http.post("/api/streaming/chat", json=chat, headers=headers)
                    assert ok.status_code == 200 and ok.json()["content"]
                    refused = await http.post("/api/streaming/chat", json=chat, headers={"x-api-key": wrong_key})
                    assert refused.status_code == 401
                    registration = {
                        "provider_id": "other",
                        "provider_type": "openai_compatible",
                        "base_url": upstream.url + "/v1",
                        "api_key": ODD_KEY,
                    }
                    admin = {"Authorization": f"Bearer {admin_key}"}
                    created = await http.post("/api/streaming/providers/register", json=registration, headers=admin)
                    assert created.status_code == 201
                    bad_upstream = await http.post(
                        "/api/streaming/chat", json=chat | {"provider_id": "other", "model": "fake-status-401"},
                        headers=headers,
                    )
                    assert bad_upstream.status_code == 401
    finally:
        root.removeHandler(capture)
        root.setLevel(saved_level)
        logging.getLogger("relay").removeHandler(capture)
    written = "\n".join(capture.lines) + json_logs.getvalue()
    assert "refused POST /api/streaming/chat: an unknown API key" in written  # the traffic was logged
    turn = next(orjson.loads(line) for line in json_logs.getvalue().splitlines() if "run opened" in line)
    assert turn["request_id"] == "req_traffic_1" and turn["user_id"] == "alice" and turn["provider"] == "gpt"
    for secret in (PROVIDER_KEY, ODD_KEY, user_key, admin_key, wrong_key):
        assert secret not in written
    assert isinstance(JsonFormatter().format(logging.makeLogRecord({"msg": user_key})), str)
