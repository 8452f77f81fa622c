"""How reelforge's processes log: text lines by default, JSON lines with
``REELFORGE_LOG_FORMAT=json``.

A line with structured fields is logged through ``log_event``: the text form is its message,
the JSON form adds the fields as keys. Nothing logged here carries a key, a signature or a
secret: callers log ids, route templates (never paths with their query) and numbers.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Final, Literal, TextIO

LogFormat = Literal["text", "json"]
TEXT_FORMAT: Final = "%(asctime)s %(name)s %(message)s"
_FIELDS: Final = "reelforge_fields"


class Text(logging.Formatter):
    """``TEXT_FORMAT``, local time; each second's text made once (a line is logged per
    request, so ``time.strftime`` per line shows in the poll's cost)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return f"{self._second[1]},{int(record.msecs):03d}"


class JsonLines(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and the record's ``log_event`` fields; an exception as ``exc_info`` text."""

    def __init__(self) -> None:
        super().__init__()
        self._second = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        line: dict[str, Any] = {
            "time": f"{self._second[1]}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: LogFormat) -> None:
    """The process's root handler on stderr at INFO, in ``log_format`` (replacing any).
    Records leave out the thread and process names and ids, which no format here shows
    (looking them up is a third of a record's cost)."""
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else Text())
    request_lines().log_format = log_format
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def log_event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """Log ``message`` at INFO with ``fields`` (JSON-able values) for the JSON form.

    Cheaper than ``logger.info`` (it runs once per request, the poll's included): the record
    is made without looking up the caller's file and line, which no format here shows."""
    if logger.isEnabledFor(logging.INFO):
        extra = {_FIELDS: fields}
        logger.handle(
            logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None, extra=extra)
        )


class RequestLines:
    """The request log: one line per HTTP request in the process's format, as the
    ``reelforge.access`` logger's would be, but written in batches past ``logging``.

    A line through ``logging`` cost a third of the hot poll's CPU (a record, the handler's
    lock, a formatter, a write per line: ``bench/service.py --only poll``); ``add`` only
    formats the line and queues it, and ``flush`` (every ``FLUSH_SECONDS`` on a thread once
    ``start``-ed, and at exit) writes what gathered at once.
    """

    FLUSH_SECONDS: Final = 0.2
    MOST_QUEUED: Final = 100_000
    """Lines kept while the stream does not take them (the oldest go first)."""

    def __init__(self, log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
        self.log_format = log_format
        self._stream = stream
        self._lines: deque[str] = deque(maxlen=self.MOST_QUEUED)
        self._second = (-1, "")
        self.started = False
        self._starting = threading.Lock()
        self._writing = threading.Lock()

    def add(
        self, method: str, route: str, status: int, seconds: float, key_id: str, request_id: str
    ) -> None:
        """Queue the line of one request: ``route`` its template, ``seconds`` its time. The
        first starts the flushing thread."""
        if not self.started:
            self.start()
        now = time.time()
        second, millis = int(now), int(now * 1000) % 1000
        if second != self._second[0]:
            self._second = (second, _stamp(second, self.log_format))
        message = (
            f"{method} {route} {status} {seconds * 1000:.1f}ms key={key_id} request={request_id}"
        )
        if self.log_format == "text":
            self._lines.append(f"{self._second[1]},{millis:03d} reelforge.access {message}")
            return
        line = {
            "time": f"{self._second[1]}.{millis:03d}Z",
            "level": "info",
            "logger": "reelforge.access",
            "message": message,
            "method": method,
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 1),
            "key_id": key_id,
            "request_id": request_id,
        }
        self._lines.append(json.dumps(line))

    def flush(self) -> None:
        """Write every queued line, in order (any thread may call it)."""
        with self._writing:  # two flushes at once would write their batches out of order
            lines = []
            with contextlib.suppress(IndexError):
                while True:
                    lines.append(self._lines.popleft())
            if lines:
                stream = self._stream or sys.stderr
                stream.write("\n".join(lines) + "\n")
                stream.flush()

    def start(self) -> None:
        """Flush every ``FLUSH_SECONDS`` on a daemon thread, and once more at exit (once)."""
        with self._starting:
            if self.started:
                return
            self.started = True
        atexit.register(self.flush)
        threading.Thread(
            target=self._flush_often, name="reelforge-request-log", daemon=True
        ).start()

    def _flush_often(self) -> None:
        while True:
            time.sleep(self.FLUSH_SECONDS)
            self.flush()


def _stamp(second: int, log_format: LogFormat) -> str:
    if log_format == "json":
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


@functools.cache
def request_lines() -> RequestLines:
    """This process's request log (its format set by ``configure_logging``)."""
    return RequestLines()
