"""The PostgreSQL store's notifications: channel names and the thread that ``LISTEN``s.

``NOTIFY`` is database-wide, so the store's channels carry the name of the schema its tables
are in (the first of the URL's ``search_path``): stores on one schema hear each other, stores
on another schema of the same database (tests, a second deployment) do not. On ``public``
the channels are the bare names.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any, Final

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

JOBS_CHANNEL: Final = "reelforge_jobs"
"""Signalled when a job becomes ``queued``; the payload is its model."""
EVENTS_CHANNEL: Final = "reelforge_events"
"""Signalled when events are appended to the log."""
LISTEN_POLL_S: Final = 0.25
"""How often the listener thread checks whether the store is closing, seconds."""
RECONNECT_BACKOFF_S: Final = (0.1, 5.0)
"""First and largest wait before the listener reconnects, seconds (doubling in between)."""
CONNECT_TIMEOUT_S: Final = 10
MAX_CHANNEL_BYTES: Final = 63
"""PostgreSQL's longest identifier."""


def channel(base: str, schema: str) -> str:
    """The channel ``base`` for a store whose tables are in ``schema``."""
    if schema == "public":
        return base
    scoped = f"{base}.{schema}"
    if len(scoped.encode()) <= MAX_CHANNEL_BYTES:
        return scoped
    return f"{base}.{hashlib.sha256(schema.encode()).hexdigest()[:32]}"


class Listener:
    """A daemon thread holding a ``LISTEN`` connection on some channels, reconnecting with
    backoff, and calling each channel's callbacks on its notifications.

    Each time ``LISTEN`` starts, first or after a reconnect, every callback is called once:
    notifications sent while nobody listened are lost. Callbacks run on this thread, so they
    must be quick; one that raises is logged and the others still run.
    """

    def __init__(self, url: str, channels: Collection[str]) -> None:
        self._url = url
        self._callbacks: dict[str, list[Callable[[], None]]] = {name: [] for name in channels}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reelforge-listen", daemon=True)

    def add(self, channel: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks[channel].append(callback)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wait for it (at most a poll interval and a connect)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        delay, max_delay = RECONNECT_BACKOFF_S
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                ) as conn:
                    for name in self._callbacks:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                    delay = RECONNECT_BACKOFF_S[0]
                    self._call(list(self._callbacks))
                    self._listen(conn)
            except psycopg.Error:
                log.warning("job notifications lost; reconnecting in %.1f s", delay, exc_info=True)
                self._stopping.wait(delay)
                delay = min(delay * 2, max_delay)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=LISTEN_POLL_S):
                self._call([notify.channel])

    def _call(self, channels: Collection[str]) -> None:
        """Call the callbacks of ``channels`` (each once)."""
        with self._lock:
            callbacks = [c for name in channels for c in self._callbacks.get(name, [])]
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a notification callback raised; the listener goes on")
