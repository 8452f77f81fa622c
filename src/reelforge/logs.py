"""How reelforge's processes log: text lines by default, JSON lines with
``REELFORGE_LOG_FORMAT=json``.

A line with structured fields is logged through ``log_event``: the text form is its message,
the JSON form adds the fields as keys. Nothing logged here carries a key, a signature or a
secret: callers log ids, route templates (never paths with their query) and numbers.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final, Literal

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
