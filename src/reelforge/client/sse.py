"""Server-sent events read line by line (the WHATWG ``text/event-stream`` rules the SDK
needs: ``id``, ``event``, ``data``, comments); no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MEDIA_TYPE: Final = "text/event-stream"


@dataclass(frozen=True)
class Event:
    """One dispatched event; ``id`` is the last id the stream set (None before any)."""

    event: str
    data: str
    id: str | None


@dataclass
class Parser:
    """Feed it the stream's lines (without their line ends); it returns each event as the
    blank line that ends it arrives. ``last_id`` is what to send back as ``Last-Event-ID``."""

    last_id: str | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return Event(kind, "\n".join(data), self.last_id)
