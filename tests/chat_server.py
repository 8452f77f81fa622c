"""A fake OpenAI-compatible chat-completions server on a loopback port, for the prompt
optimizer's tests: it answers every ``POST /v1/chat/completions`` with ``reply`` (a text, or a
function of the user message), after ``delay`` seconds, and records what it was sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | Callable[[str], str]


@dataclass
class ChatServer:
    """What the fake answers (``reply``, ``finish_reason``, ``status``, ``delay`` seconds) and
    what it was sent: each call's JSON body and ``Authorization`` header."""

    reply: Reply = "A rewritten prompt."
    finish_reason: str = "stop"
    status: int = 200
    delay: float = 0.0
    url: str = ""
    """The base URL a client appends ``/chat/completions`` to (``http://127.0.0.1:N/v1``)."""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    """Set at shutdown: a delayed answer stops waiting."""

    def answer(self, body: dict[str, Any]) -> bytes:
        user = body["messages"][-1]["content"]
        text = self.reply(user) if callable(self.reply) else self.reply
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": self.finish_reason,
        }
        completion = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice]}
        return json.dumps(completion).encode()


def _handler(chat: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            chat.bodies.append(body)
            chat.authorizations.append(self.headers.get("Authorization"))
            if chat.released.wait(chat.delay):
                return  # shutting down: never answer
            payload = chat.answer(body) if self.path == "/v1/chat/completions" else b"{}"
            self.send_response(chat.status if self.path == "/v1/chat/completions" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def chat_server(chat: ChatServer | None = None) -> Iterator[ChatServer]:
    """Serve ``chat`` (a default one if None) on a free loopback port until the block ends."""
    chat = chat or ChatServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(chat))
    server.daemon_threads = True
    chat.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield chat
    finally:
        chat.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
