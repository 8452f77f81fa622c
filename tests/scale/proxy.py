"""A loopback TCP proxy whose connections a test can cut, to stand between workers and
PostgreSQL.

One thread moves the bytes of every connection (``selectors``, blocking sends with a
timeout). ``cut`` closes every client socket and its upstream socket at once, as a network
failure would; the listening socket stays open, so new connections succeed right after.
"""

from __future__ import annotations

import selectors
import socket
import threading
from typing import Final

SELECT_S: Final = 0.05
"""Longest wait of the proxy's loop, seconds: how soon it sees a stop or a cut request."""
SOCKET_TIMEOUT_S: Final = 5.0
"""A send to a peer that stopped reading (a paused worker) gives up after this, seconds."""
CONNECT_TIMEOUT_S: Final = 3.0
CUT_WAIT_S: Final = 5.0


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` until closed; usable as a context."""

    def __init__(self, upstream: tuple[str, int], *, drop_first: int = 0) -> None:
        """``drop_first``: close that many new connections at once, as a blip would."""
        self.upstream = upstream
        self.drop_first = drop_first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._stopping = threading.Event()
        self._cut_asked = threading.Event()
        self._cut_done = threading.Event()
        self._cut_count = 0
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name="pg-proxy", daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(CUT_WAIT_S)
        self._close_all()
        self._selector.close()
        self._listener.close()

    def cut(self) -> int:
        """Close every open connection (both ends); returns how many client connections."""
        self._cut_done.clear()
        self._cut_asked.set()
        if not self._cut_done.wait(CUT_WAIT_S):
            raise RuntimeError("the proxy did not cut its connections in time")
        return self._cut_count

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._cut_asked.is_set():
                self._cut_asked.clear()
                self._cut_count = self._close_all()
                self._cut_done.set()
            for key, _ in self._selector.select(SELECT_S):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    self._forward(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self.drop_first > 0:
            self.drop_first -= 1
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT_S)
        except OSError:
            client.close()  # the client sees a refused server, as without the proxy
            return
        for end in (client, upstream):
            end.settimeout(SOCKET_TIMEOUT_S)
            self._selector.register(end, selectors.EVENT_READ)
        self._peers[client], self._peers[upstream] = upstream, client
        self.accepted += 1

    def _forward(self, source: socket.socket) -> None:
        target = self._peers.get(source)
        if target is None:  # closed earlier in this round of events
            return
        try:
            data = source.recv(65536)
            if data:
                target.sendall(data)
                return
        except OSError:
            pass
        self._close_pair(source)

    def _close_pair(self, end: socket.socket) -> None:
        other = self._peers.pop(end)
        del self._peers[other]
        for sock in (end, other):
            self._selector.unregister(sock)
            sock.close()

    def _close_all(self) -> int:
        """Close every connection; returns how many there were (pairs)."""
        pairs = len(self._peers) // 2
        while self._peers:
            self._close_pair(next(iter(self._peers)))
        return pairs
