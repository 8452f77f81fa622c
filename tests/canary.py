"""A canary for SSRF tests: listening sockets on one port of 127.0.0.1, 127.0.0.2 and ::1
that never accept on their own, so every connection that reaches them waits in a backlog
and is counted when asked."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator


class Canary:
    """Counts connections to its port on the loopback addresses."""

    def __init__(self, port: int = 0) -> None:
        self.listeners: list[socket.socket] = []
        try:
            self.port = self._listen(socket.AF_INET, "127.0.0.1", port)
            self._listen(socket.AF_INET, "127.0.0.2", self.port)
            self._listen_ipv6_if_available()
        except OSError:
            self.close()
            raise

    def _listen(self, family: socket.AddressFamily, host: str, port: int) -> int:
        listener = socket.socket(family, socket.SOCK_STREAM)
        self.listeners.append(listener)
        listener.bind((host, port))
        listener.listen(16)
        listener.setblocking(False)
        return int(listener.getsockname()[1])

    def _listen_ipv6_if_available(self) -> None:
        try:
            self._listen(socket.AF_INET6, "::1", self.port)
        except OSError as exc:  # no IPv6 loopback here: the IPv4 listeners still watch
            if exc.errno == errno.EADDRINUSE:
                raise

    def connections(self) -> int:
        """How many connections reached any listener (each is taken from the backlog)."""
        count = 0
        for listener in self.listeners:
            while True:
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                connection.close()
                count += 1
        return count

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def open_canary(port: int = 0) -> Iterator[Canary]:
    """A canary for a fixture to yield; a free port on 127.0.0.1 may be taken on 127.0.0.2
    or ::1, so up to five ports are tried."""
    for _ in range(5):
        try:
            watcher = Canary(port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port:
                raise
            continue
        yield watcher
        watcher.close()
        return
    raise RuntimeError("no free port for the canary on 127.0.0.1, 127.0.0.2 and ::1")
