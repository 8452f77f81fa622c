"""Trying an action again while it fails for a passing reason (a busy or unreachable
database), with doubling pauses, until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retrying(
    attempt: Callable[[], T],
    *,
    retry_on: Callable[[Exception], bool],
    seconds: float,
    pause: float,
    max_pause: float,
) -> T:
    """``attempt()``, tried again while it raises an error ``retry_on`` accepts, pausing
    ``pause`` seconds between tries (doubling up to ``max_pause``) and never sleeping past
    ``seconds`` from the first try; then its last error. Any other error is raised at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not retry_on(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, max_pause)
