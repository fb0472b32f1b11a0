"""The TCP sockets a process tree listens on, read from ``/proc`` (Linux), and which of them serve Relay's app.

A bind test cannot stop at "every socket is on 127.0.0.1": Ray's own processes listen on all interfaces
(GCS, raylet and core-worker gRPC, token-authenticated; its Prometheus exporters) whatever Relay binds. What
Relay promises on a loopback bind is that its app, the HTTP surface, answers nowhere else; ``serving_relay``
asks every listener beyond loopback whether it does.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Listener", "listeners", "serving_relay"]

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    pid: int
    title: str

    @property
    def program(self) -> str:
        """The file name of what runs (``haproxy``), or a Ray worker's title (``ray::ProxyActor``)."""
        return os.path.basename(self.title)

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6} write each 32-bit word of the address in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _listening_inodes() -> dict[int, tuple[str, int]]:
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                hex_address, hex_port = fields[1].split(":")
                found[int(fields[9])] = (_address(hex_address), int(hex_port, 16))
    return found


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


def listeners(root: int) -> list[Listener]:
    """Every listening TCP socket held by ``root`` or a process descending from it (Ray's workers do)."""
    inodes = _listening_inodes()
    found = []
    for pid in _tree(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and (inode := int(target[8:-1])) in inodes:
                address, port = inodes[inode]
                found.append(Listener(address, port, pid, _title(pid)))
    return sorted(set(found), key=lambda item: (item.port, item.address))


def serving_relay(listener: Listener) -> bool:
    """Whether ``GET /healthz`` on this socket is Relay's answer (a wildcard socket is asked over loopback)."""
    address = ipaddress.ip_address(listener.address)
    candidates = [str(address)]
    if address.is_unspecified:  # "::" takes IPv4 too unless it is IPv6-only
        candidates = ["127.0.0.1"] if address.version == 4 else ["::1", "127.0.0.1"]
    return any(_answers_as_relay(candidate, listener.port) for candidate in candidates)


def _answers_as_relay(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3) as probe:
            probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := probe.recv(4096):
                answer += chunk
    except OSError:  # refused, reset or silent: a gRPC server, say; not Relay's app
        return False
    return answer.startswith(b"HTTP/1.1 200") and answer.rstrip().endswith(b'{"status":"ok"}')
