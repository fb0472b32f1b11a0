"""Remove a worker node that holds live sessions: every session reactivates on another node, no turn lost."""

from __future__ import annotations

import os

import pytest

from tests.integration.figures import report_figures, run_cluster_script

pytestmark = pytest.mark.integration


def test_sessions_survive_losing_their_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    figures, exit_code = run_cluster_script("tests.integration.multinode", dict(os.environ))
    report_figures(request, tmp_path_factory, "multinode", figures)
    assert figures["on_removed_node"] >= 1
    assert figures["reactivated_elsewhere"] == figures["on_removed_node"]
    for name in (
        "lost_turns",
        "histories_not_exact",
        "wrong_replies",
        "double_activations",
        "not_live_after_third_turn",
    ):
        assert figures[name] == 0, name
    assert exit_code == 0
