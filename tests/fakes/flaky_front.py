"""A TCP front that resets connections before any byte, to fail an SDK's connection rather than its request."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

__all__ = ["FlakyFront"]


class FlakyFront:
    """A TCP front on 127.0.0.1 that resets its first ``resets`` connections before a byte, then forwards to ``port``.

    What a restarting upstream or a load balancer does: the SDK sees a connection error, not an HTTP status.
    """

    def __init__(self, port: int, resets: int) -> None:
        self.target = port
        self.resets = resets
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.resets:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
                conn.close()
                continue
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.target)) as upstream:
            inbound = threading.Thread(target=_pipe, args=(conn, upstream), daemon=True)
            inbound.start()
            _pipe(upstream, conn)
            inbound.join()

    def __enter__(self) -> FlakyFront:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(timeout=10)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
