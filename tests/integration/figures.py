"""Failure and deployment tests report figures: written to pytest's base temp dir and printed on every run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actors.deploy import RAY_ENV
from tests.conftest import pg_schema

__all__ = ["report_figures", "run_cluster_script", "store_name"]

ROOT = Path(__file__).resolve().parents[2]


def store_name() -> str:
    return os.environ.get("RELAY_TEST_STORE", "sqlite")


def report_figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str, figures: dict[str, Any]
) -> None:
    path = tmp_path_factory.getbasetemp() / f"{name}-figures.json"
    path.write_text(json.dumps(figures, indent=2))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # past the output capture: shown on every run, not only with -s
        print(f"\n{name} figures ({path}):\n{json.dumps(figures, indent=2)}")


def run_cluster_script(module: str, env: dict[str, str]) -> tuple[dict[str, Any], int]:
    """Run a script that builds its own ``ray.cluster_utils.Cluster`` in a subprocess; its last line is JSON figures.

    A subprocess, so its cluster never meets the session's shared one. Returns the figures and the exit code:
    exit 1 still carries figures, which the test judges before it checks the code.
    """
    env = RAY_ENV | env  # its cluster runs Serve the way `relay serve` does
    with contextlib.ExitStack() as stack:
        if store_name() == "postgres":
            env = {**env, "RELAY_STORE_URL": stack.enter_context(pg_schema())}
        done = subprocess.run(
            [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=420
        )
    lines = done.stdout.strip().splitlines()
    assert done.returncode in (0, 1) and lines, done.stderr[-4000:]
    return {**json.loads(lines[-1]), "store": store_name()}, done.returncode
