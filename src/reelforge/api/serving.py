"""How uvicorn serves the API: one set of options (``uvicorn_options``) for ``reelforge
serve`` and the test servers, and an HTTP protocol with a read deadline.

uvicorn times out an idle keep-alive connection, but nothing else: a connection that opens
and sends nothing, or half a request's headers, or half its body, is kept forever (one
slow client per connection can hold them all). ``ReadDeadlineProtocol`` closes it:

- a new connection must start its request, and a request must send all its headers, within
  ``read_timeout`` seconds (answered ``408`` and closed otherwise);
- a body may not pause for longer than ``read_timeout`` seconds (closed; the app sees the
  client disconnect).

The deadline is a number kept per connection; one timer per connection checks it, so a
request read in one piece (a poll) costs a few float comparisons, no timer.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Final, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reelforge.api.headers import SECURITY_HEADERS
from reelforge.settings import Settings

KEEP_ALIVE_SECONDS: Final = 5
"""How long an idle keep-alive connection is kept after an answer (uvicorn's default)."""
_TIMED_OUT_BODY: Final = b"the request was not sent in time\n"
_TIMED_OUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    + b"content-length: %d\r\nconnection: close\r\n" % len(_TIMED_OUT_BODY)
    + b"".join(b"%s: %s\r\n" % header for header in SECURITY_HEADERS)
    + b"\r\n"
    + _TIMED_OUT_BODY
)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments ``uvicorn.run``/``uvicorn.Config`` get beside the app: no
    ``Server`` header, the keep-alive timeout, the read deadline."""
    protocol = functools.partial(ReadDeadlineProtocol, read_timeout=settings.read_timeout_seconds)
    return {
        "host": settings.host,
        "port": settings.port,
        "server_header": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "http": cast(type[asyncio.Protocol], protocol),
    }


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (the one ``uvicorn[standard]`` uses), with the read
    deadline of the module's docstring."""

    def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._deadline: float | None = None
        """Loop time by which the next byte of a request is due; None when none is due."""
        self._headers_done = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_by(self.loop.time() + self._read_timeout, headers_done=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_by(self.loop.time() + self._read_timeout, headers_done=False)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._expect_by(self.loop.time() + self._read_timeout, headers_done=True)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._deadline = self.loop.time() + self._read_timeout

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = None

    def _expect_by(self, deadline: float, *, headers_done: bool) -> None:
        self._deadline = deadline
        self._headers_done = headers_done
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check)

    def _check(self) -> None:
        """The timer: close the connection if its deadline passed; else wait for it."""
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server stopped reading (a pipelined request waits)
            self._deadline = now + self._read_timeout
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        if not self._headers_done:
            self.transport.write(_TIMED_OUT)
        self.transport.close()
