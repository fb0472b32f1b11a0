"""Deploy config/serve.yaml on three nodes: the app serves across them, and /readyz follows its pools."""

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


def test_serve_yaml_deploys_on_a_three_node_cluster_and_serves_across_it(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with contextlib.ExitStack() as stack:
        # Provider keys in this environment would add pools: the file's default is echo alone.
        env = {key: value for key, value in os.environ.items() if key not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
        if os.environ.get("RELAY_TEST_STORE") == "postgres":
            env["RELAY_STORE_URL"] = stack.enter_context(pg_schema())
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.deploy_multinode"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
    lines = done.stdout.strip().splitlines()
    assert done.returncode in (0, 1) and lines, done.stderr[-4000:]  # 1 with figures: judged below
    figures = json.loads(lines[-1])
    figures["store"] = os.environ.get("RELAY_TEST_STORE", "sqlite")
    path = tmp_path_factory.getbasetemp() / "deploy-figures.json"
    path.write_text(json.dumps(figures, indent=2))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # past the output capture: shown on every run, not only with -s
        print(f"\ndeploy figures ({path}):\n{json.dumps(figures)}")
    assert figures["ready_pools"] == ["echo"]
    assert figures["chats_served"] == figures["chats_sent"] and figures["histories_whole"] == 6
    where = figures["placements"]
    # The proxy on the head, the ingress and the pool on workers (the head has no CPU): requests cross nodes.
    assert where["ProxyActor"] == ["head"]
    assert where["Ingress"] and "head" not in where["Ingress"]
    assert where["pool-echo"] and "head" not in where["pool-echo"]
    assert len({node for nodes in where.values() for node in nodes}) >= 2
    assert figures["registered"] == 201 and figures["ready_with_extra"] == 200
    assert figures["not_ready_status"] == 503 and "pool 'extra'" in figures["not_ready_reason"]
    assert figures["ready_again"] == 200
    assert done.returncode == 0
