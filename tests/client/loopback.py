"""A scripted HTTP server on 127.0.0.1 for the client's tests: each route answers what the
test says (a status, headers, a body that may stop short of its Content-Length, or no
answer at all), and every request is recorded with the moment it arrived."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

LEGACY = "/v2/generate/video/minimax/generation"


@dataclass(frozen=True)
class Seen:
    """A request as it arrived; ``headers`` with lower-case names, ``at`` on the monotonic clock."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True)
class Answer:
    """What to send back. ``announce``: the Content-Length to state when it is not the size
    of ``body`` (the connection then closes short of it). Status 0: hang up, answer nothing."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    announce: int | None = None


HANG_UP = Answer(0)
Route = Callable[[Seen], Answer]


def in_turn(*answers: Answer) -> Route:
    """A route answering ``answers`` one per request, then the last one for ever."""
    queue = list(answers)

    def answer(_: Seen) -> Answer:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


def as_json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    head = {"Content-Type": "application/json", **(headers or {})}
    return Answer(status, json.dumps(body).encode(), head)


def generation(
    status: str,
    *,
    url: str | None = None,
    error: tuple[str, str] | None = None,
    progress: int = 0,
    generation_id: str = "g1",
) -> Answer:
    """A poll's answer as the contract words it."""
    return as_json(
        {
            "id": generation_id,
            "status": status,
            "video": None if url is None else {"url": url},
            "error": None if error is None else {"name": error[0], "message": error[1]},
            "meta": {"usage": {"credits_used": 1.0}} if status in ("completed", "error") else None,
            "progress": progress,
        }
    )


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request from its route; HTTP/1.0, so each answer ends the connection."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.routes: dict[tuple[str, str], Route] = {}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, answer: Route) -> None:
        self.routes[method, path] = answer

    def requests(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    def answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.seen.append(seen)
            route = self.routes.get((seen.method, seen.path))
            if route is None:
                return as_json({"error": {"name": "NotFound", "message": seen.path}}, 404)
            return route(seen)


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        arrived = time.monotonic()
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        seen = Seen(self.command, url.path, dict(parse_qsl(url.query)), headers, body, arrived)
        answer = self.server.answer(seen)
        if answer.status == 0:
            return  # the server closes the connection without a word
        self.send_response(answer.status)
        announced = len(answer.body) if answer.announce is None else answer.announce
        self.send_header("Content-Length", str(announced))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up on this answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def serving(port: int = 0) -> Iterator[ScriptedServer]:
    """A scripted server on ``port`` of 127.0.0.1 (a free one by default) until the block ends."""
    server = ScriptedServer(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
