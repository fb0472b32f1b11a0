"""Two directory partitions on a three-node cluster: spread, single activation under load, a partition killed."""

from __future__ import annotations

import os

import pytest

from tests.integration.figures import report_figures, run_cluster_script

pytestmark = pytest.mark.integration


def test_two_partitions_each_own_their_sessions_and_survive_a_killed_replica(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    figures, exit_code = run_cluster_script("tests.integration.directory_partitions", dict(os.environ))
    report_figures(request, tmp_path_factory, "directory-partitions", figures)
    spread, crowd, kill = figures["spread"], figures["concurrent_sends"], figures["kill_partition"]
    # new sessions land on both partitions, each activated once, by its owner only
    assert min(spread["per_partition"]) > 0 and spread["ok"] == spread["sessions"]
    assert spread["activations_per_partition"] == spread["per_partition"]
    assert spread["double_activations"] == spread["not_activated"] == spread["live_on_a_foreign_partition"] == 0
    assert crowd["ok"] == crowd["sends"] == 200
    assert crowd["double_activations"] == crowd["hosted_twice"] == 0
    # partition 1's replica killed mid-traffic: Serve replaced it, every turn was answered and is stored
    assert kill["replica_replaced"]
    assert kill["acknowledged"] == kill["turns"] and kill["unanswered"] == 0
    assert kill["lost_acknowledged_turns"] == kill["histories_out_of_order"] == 0
    assert kill["double_activations"] == kill["hosted_twice"] == 0
    assert kill["partition_0_reactivations"] == 0  # the other partition's sessions stayed live
    assert exit_code == 0
