"""Remove a worker node that holds live sessions: every session reactivates on another node, no turn lost."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import pg_schema

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_sessions_survive_losing_their_node() -> None:
    with contextlib.ExitStack() as stack:
        env = dict(os.environ)
        if os.environ.get("RELAY_TEST_STORE") == "postgres":
            env["RELAY_STORE_URL"] = stack.enter_context(pg_schema())
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.multinode"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["on_removed_node"] >= 1
    assert figures["reactivated_elsewhere"] == figures["on_removed_node"] and figures["lost_turns"] == 0
