"""Schemathesis fuzzes the app from its own ``/openapi.json``: no server error, every answer as documented.

The run is the CLI, as CI would run it against a deployment, here against the in-process
app under uvicorn. It is bounded by ``--max-examples`` per operation and phase, and by the
subprocess timeout; the seed is fixed so CI replays the same cases (pass another to explore).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.config import ProviderConfig, RelaySettings
from relay.http.app import build_app
from relay.http.openapi import OPERATIONS
from relay.session.local_backend import LocalBackend
from tests.fakes.openai_upstream import ServerThread

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 25
SEED = 1


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    path = tmp_path_factory.mktemp("schemathesis") / "relay.db"
    providers = [ProviderConfig(provider_id="echo", provider_type="echo", model="echo")]
    return LocalBackend(RelaySettings(store_url=f"sqlite:///{path}", providers=providers))


@pytest.fixture(scope="module")
def server(backend: LocalBackend) -> Iterator[str]:
    with ServerThread(build_app(backend)) as running:
        yield running.url


def test_every_route_is_in_the_spec_with_its_own_entry(server: str, backend: LocalBackend) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    published = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    routes = {
        (method, route.path)
        for route in build_app(backend).routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    assert published == routes == set(OPERATIONS)
    chat = spec["paths"]["/api/streaming/chat"]["post"]
    body = spec["components"]["schemas"]["StreamingChatBody"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/StreamingChatBody"
    }
    # what parse_body accepts, no more: the passthrough parameters are listed, any other field is refused
    assert body["additionalProperties"] is False and {"tools", "stop", "seed"} <= set(body["properties"])
    assert {"400", "413", "415", "502"} <= set(chat["responses"])
    assert spec["paths"]["/readyz"]["get"]["responses"].keys() == {"200", "503"}


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error(
    server: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    report = tmp_path / "schemathesis.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server}/openapi.json",
        f"--checks={CHECKS}",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=60",
        "--report=json",
        f"--report-json-path={report}",
    ]
    with caplog.at_level(logging.ERROR):
        done = subprocess.run(
            command, cwd=tmp_path, env=os.environ | {"NO_COLOR": "1"}, capture_output=True, text=True, timeout=800
        )
    assert report.is_file(), done.stdout[-4000:] + done.stderr[-4000:]
    run = json.loads(report.read_text())
    figures = {
        "operations": run["operations"]["tested"],
        "test_cases": run["test_cases"]["generated"],
        "with_failures": run["test_cases"]["with_failures"],
        "errored": run["test_cases"]["errored"],
        "phases": {name: phase["status"] for name, phase in run["phases"].items()},
        "seconds": round(run["running_time"], 1),
        "max_examples": MAX_EXAMPLES,
        "seed": SEED,
    }
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # past the output capture: shown on every run, not only with -s
        print(f"\nschemathesis figures: {json.dumps(figures)}")
    assert done.returncode == 0 and run["failures"] == [] and run["errors"] == [], done.stdout[-8000:]
    assert run["complete"] and run["stop_reason"] == "completed"
    fuzzed = len(OPERATIONS) - 1  # all but GET /openapi.json: schemathesis leaves out the document it loaded
    assert run["operations"]["tested"] == run["operations"]["total"] == fuzzed
    assert run["test_cases"]["generated"] >= MAX_EXAMPLES * fuzzed
    # A stream that fails after its headers went out is no 5xx; the app would still have logged it.
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
