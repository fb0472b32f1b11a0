"""The directory's partition mapping: one owner per session id, the same in every process, spread evenly."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import pytest
from ray.serve._private.build_app import build_app

import serve_app
from actors.names import directory_name
from actors.partitions import merge_stats, mint_session_id, partition_of, share
from relay.store import new_id

# Ids shaped like the store's (new_id), drawn from a fixed seed: the evenness bounds below are checked, not hoped for.
_DRAW = random.Random(17)
IDS = [f"sess_{_DRAW.getrandbits(128):032x}" for _ in range(20_000)]


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 8])
def test_every_id_has_exactly_one_owner_and_the_owners_are_even(partitions: int) -> None:
    owners = Counter(partition_of(sid, partitions) for sid in IDS)
    assert set(owners) == set(range(partitions))
    expected = len(IDS) / partitions
    assert all(abs(n - expected) < 0.05 * expected for n in owners.values()), owners
    assert all(partition_of(sid, partitions) == partition_of(sid, partitions) for sid in IDS[:100])


def test_the_mapping_is_the_same_in_another_process() -> None:
    """Not Python's salted ``hash()``: an ingress and a directory in two processes must agree."""
    sample = IDS[:50]
    code = "import sys; from actors.partitions import partition_of; print([partition_of(s, 4) for s in sys.argv[1:]])"
    other = subprocess.run(
        [sys.executable, "-c", code, *sample],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert other.stdout.strip() == str([partition_of(sid, 4) for sid in sample])


def test_one_more_partition_moves_only_its_share_of_the_sessions() -> None:
    for n in (1, 2, 3):
        moved = [sid for sid in IDS if partition_of(sid, n) != partition_of(sid, n + 1)]
        assert all(partition_of(sid, n + 1) == n for sid in moved)  # only onto the new partition
        assert abs(len(moved) / len(IDS) - 1 / (n + 1)) < 0.02


def test_a_partition_mints_ids_it_owns() -> None:
    for partition in range(4):
        assert all(partition_of(mint_session_id(partition, 4), 4) == partition for _ in range(50))
    assert mint_session_id().startswith("sess_") and len(mint_session_id()) == len(new_id("sess"))


def test_partition_zero_keeps_the_directory_name() -> None:
    assert [directory_name(i) for i in range(3)] == ["SessionDirectory", "SessionDirectory-1", "SessionDirectory-2"]


def test_the_app_builds_one_single_replica_deployment_per_partition() -> None:
    built = build_app(serve_app.app({"sessions": {"directory_partitions": 3}}), name="relay").deployments
    directories = [d for d in built if d.name.startswith("SessionDirectory")]
    assert [d.name for d in directories] == [directory_name(i) for i in range(3)]
    assert all(d.num_replicas == 1 and d.init_args[1] == i for i, d in enumerate(directories))
    ingress = next(d for d in built if d.name == "Ingress")
    assert [h.deployment_name for h in ingress.init_args[1]] == [directory_name(i) for i in range(3)]


def test_the_shares_add_up_to_the_cluster_total() -> None:
    for total in (0, 1, 2, 4, 7, 32, 4096):
        for partitions in (1, 2, 3, 4):
            parts = [share(total, partitions, i) for i in range(partitions)]
            assert sum(parts) == total and max(parts) - min(parts) <= 1
    # the actor cap never leaves a partition without an actor
    assert [share(2, 4, i, floor=1) for i in range(4)] == [1, 1, 1, 1]


def test_stats_merge_into_one_directory() -> None:
    def part(live: int, actors: int) -> dict[str, object]:
        return {"live": live, "max_actors": actors, "activations": live, "stored": 10, "idle_ttl_s": 30.0}

    merged = merge_stats([part(3, 2), part(4, 2)])
    assert merged == {
        "live": 7,
        "max_actors": 4,
        "activations": 7,
        "stored": 10,
        "idle_ttl_s": 30.0,
        "passivated": 3,
        "partitions": 2,
    }
