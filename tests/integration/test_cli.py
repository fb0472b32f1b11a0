"""``relay chat`` and ``relay status`` as a user runs them, against the served app; ``dev.py serve`` and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Relay
from tests.integration.listeners import listeners, serving_relay
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def relay_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chat_streams_and_keeps_its_session(relay: Relay) -> None:
    done = relay_cli("chat", "--url", relay.url, "--provider", "echo", stdin="first words\nsecond\n")
    assert done.returncode == 0, done.stderr
    assert "assistant> first words" in done.stdout and "assistant> second" in done.stdout
    sessions = {line.split()[1].rstrip(")") for line in done.stderr.splitlines() if line.startswith("(session ")}
    assert len(sessions) == 1  # both turns ran in one session


def test_status_lists_sessions_and_pools(relay: Relay) -> None:
    done = relay_cli("status", "--url", relay.url)
    assert done.returncode == 0, done.stderr
    assert "live on" in done.stdout and "echo" in done.stdout and "up" in done.stdout


def test_status_reports_an_unreachable_server() -> None:
    done = relay_cli("status", "--url", "http://127.0.0.1:9")
    assert done.returncode == 1 and "cannot reach" in done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_dev_serve_answers_on_loopback_only_and_ctrl_c_stops_everything_in_one_line(tmp_path: Path) -> None:
    """The embedded default (loopback, no auth): no socket of its process tree beyond loopback serves Relay's app,
    and no HAProxy runs (its stats and metrics ports would be on all interfaces, relay.cli.serve.check_ingress).
    Then Ctrl-C as a terminal does it: SIGINT to the whole foreground process group. A clean stop exits 0
    (stopping is how a server ends), prints "Relay stopped." and no traceback or Ray shutdown noise, and frees
    the port. One test, so that the suite starts this second cluster once."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a cluster of its own
    server = subprocess.Popen(
        [sys.executable, "scripts/dev.py", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    try:

        def answers() -> bool:
            assert server.poll() is None, server.communicate()[0]  # it died: say why at once
            return _answers(f"http://127.0.0.1:{port}/healthz")

        wait_until(answers, timeout_s=240, interval_s=0.5, what="relay serve to answer /healthz")
        found = listeners(server.pid)
        relay_app = [item for item in found if serving_relay(item)]
        assert [(item.address, item.port) for item in relay_app] == [("127.0.0.1", port)], found
        assert not any(item.program == "haproxy" for item in found), found
        os.killpg(server.pid, signal.SIGINT)
        output, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, output
    # /healthz may answer before the banner is printed: a stop then, during start-up, must be as clean
    assert output.rstrip().endswith("Relay stopped.") and output.count("Relay stopped.") == 1, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "graceful_shutdown" not in output, output
    assert not _port_taken(port)
