"""``relay chat`` and ``relay status`` as a user runs them, against the served app."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import Relay

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
