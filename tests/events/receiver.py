"""A webhook receiver on a loopback port for tests: records every request it gets and
answers each with the next status of its script (then 200), after an optional delay; it can
be stopped (the port then refuses connections) and started again on the same port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.service import free_port


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and the status it was answered with."""

    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]
"""``answer(request_json)`` → (status, JSON body) of a scripted reply."""


class Receiver:
    def __init__(self, *, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        self.answer: Answer | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                status, reply = receiver.reply(body)
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body, status))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reply(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.answer is not None:
            return self.answer(json.loads(body))
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
        return status, {}

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The requests received, once there are ``count`` (fails the test on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} requests within {timeout} s")


@contextmanager
def receiving(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
