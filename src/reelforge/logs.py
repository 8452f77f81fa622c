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


class JsonLines(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and the record's ``log_event`` fields; an exception as ``exc_info`` text."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: LogFormat) -> None:
    """The process's root handler on stderr at INFO, in ``log_format`` (replacing any)."""
    handler = logging.StreamHandler()
    formatter = JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def log_event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """Log ``message`` at INFO with ``fields`` (JSON-able values) for the JSON form."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", message, extra={_FIELDS: fields})
