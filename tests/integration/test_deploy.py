"""Deploy config/serve.yaml on three nodes: the app serves across them, and /readyz follows its pools."""

from __future__ import annotations

import os

import pytest

from tests.integration.figures import report_figures, run_cluster_script

pytestmark = pytest.mark.integration


def test_serve_yaml_deploys_on_a_three_node_cluster_and_serves_across_it(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Provider keys in this environment would add pools: the file's default is echo alone.
    env = {key: value for key, value in os.environ.items() if key not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    figures, exit_code = run_cluster_script("tests.integration.deploy_multinode", env)
    report_figures(request, tmp_path_factory, "deploy", figures)
    assert figures["ready_pools"] == ["echo"]
    assert figures["chats_served"] == figures["chats_sent"] and figures["histories_whole"] == 6
    where = figures["placements"]
    # The proxy on the head, the ingress and the pool on workers (the head has no CPU): requests cross nodes.
    assert where["ProxyActor"] == ["head"]
    assert where["Ingress"] and "head" not in where["Ingress"]
    assert where["pool-shared"] and "head" not in where["pool-shared"]
    assert len({node for nodes in where.values() for node in nodes}) >= 2
    assert figures["registered"] == 201 and figures["ready_with_extra"] == 200
    assert figures["not_ready_status"] == 503 and "pool 'extra'" in figures["not_ready_reason"]
    assert figures["ready_again"] == 200
    assert exit_code == 0
