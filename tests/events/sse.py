"""Reading a live stream in tests: every event until the server ends it (or ``until``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from reelforge.client.sse import Event, Parser


@dataclass
class Reading:
    """What a stream sent: its events (``data`` decoded) and how many heartbeats."""

    events: list[Event] = field(default_factory=list)
    heartbeats: int = 0
    ended: bool = False
    """The server closed the stream (rather than the reader stopping)."""

    @property
    def answers(self) -> list[dict[str, Any]]:
        return [json.loads(event.data) for event in self.events]

    @property
    def ids(self) -> list[int]:
        return [int(event.id or 0) for event in self.events]


def read_stream(
    client: httpx.Client,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    until: Callable[[Reading], bool] = lambda _: False,
    on_open: Callable[[httpx.Response], None] = lambda _: None,
) -> Reading:
    """Read ``path``'s stream until the server ends it or ``until`` says stop."""
    reading, parser = Reading(), Parser()
    with client.stream("GET", path, params=params, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        on_open(response)
        for line in response.iter_lines():
            reading.heartbeats += line.startswith(":")
            event = parser.feed(line)
            if event is not None:
                reading.events.append(event)
            if until(reading):
                return reading
    reading.ended = True
    return reading
