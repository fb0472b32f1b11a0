"""Process trees, sessions and their CPU time from ``/proc`` (Linux only, no psutil).

Ray names its workers by what they run (``ray::SessionActor``, ``ray::ServeReplica:relay:Ingress``,
``ray::ProxyActor``), so grouping a tree by title splits Relay's CPU between its parts. A sample is
taken before and after a measurement; a process that exits in between loses its time, so figures
are a floor.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CpuSample", "cpu_percent", "sample_titled", "sample_tree", "session_pids"]

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# pid -> (group, process start time in ticks, cpu seconds): the start time tells a reused pid apart.
CpuSample = dict[int, tuple[str, int, float]]


def _fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, pgrp, session, …; None once it is gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, start time, user + system cpu seconds)."""
    fields = _fields(pid)
    if fields is None:
        return None
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICKS


def _title(pid: int) -> str:
    """``ray::SessionActor.chat`` -> ``ray::SessionActor``; a plain program -> its file name."""
    try:
        argv0 = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return "?"
    first = argv0.split(" ", 1)[0]
    if first.startswith("ray::"):
        return first.split(".", 1)[0]
    return os.path.basename(first) or "?"


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def session_pids(sid: int) -> list[int]:
    """Every process in session ``sid``: Ray gives its workers their own process groups, not their own sessions."""
    return [pid for pid in _all_pids() if (fields := _fields(pid)) is not None and int(fields[3]) == sid]


def sample_tree(root: int) -> CpuSample:
    """Every process descending from ``root`` (``root`` included)."""
    parents: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int, float]] = {}
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None:
            stats[pid] = stat
            parents.setdefault(stat[0], []).append(pid)
    sample: CpuSample = {}
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        _, started, cpu = stats[pid]
        sample[pid] = (_title(pid), started, cpu)
        todo.extend(parents.get(pid, ()))
    return sample


def sample_titled(prefix: str) -> CpuSample:
    """Every process on the machine whose title starts with ``prefix``, whoever started it."""
    sample: CpuSample = {}
    for pid in _all_pids():
        title = _title(pid)
        if title.startswith(prefix):
            stat = _stat(pid)
            if stat is not None:
                sample[pid] = (title, stat[1], stat[2])
    return sample


def cpu_percent(before: CpuSample, after: CpuSample, wall_s: float) -> dict[str, float]:
    """Per group, the CPU used between the samples in % of one core; processes born in between count from 0."""
    used: dict[str, float] = {}
    for pid, (group, started, cpu) in after.items():
        earlier = before.get(pid)
        base = earlier[2] if earlier is not None and earlier[1] == started else 0.0
        used[group] = used.get(group, 0.0) + cpu - base
    return {group: round(100 * seconds / wall_s, 1) for group, seconds in sorted(used.items())} if wall_s > 0 else {}
