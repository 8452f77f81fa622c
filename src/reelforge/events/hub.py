"""Wake-ups for the live streams of one API process.

One task per process reads the event log for everything appended since it last looked and
wakes only the streams whose job has new events; a stream then reads its own job's events.
So an idle stream costs nothing but its socket, whatever the number of streams: the process
makes one indexed read every ``poll_seconds`` while it has streams (none without), and on
PostgreSQL reads at once when ``NOTIFY`` says events were appended anywhere. Any process
streams any job: the log, not the process that changed the job, is what wakes a stream.

Event ids follow commit order on both stores (SQLite has one writer; PostgreSQL appends
under a lock), so a cursor that has passed an id never misses a later commit below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Final

from anyio import to_thread

from reelforge.errors import Unavailable
from reelforge.jobs.model import JobQueue

log = logging.getLogger(__name__)

BATCH: Final = 1000
"""Events read per look; a full batch is followed by another look at once."""
MIN_GAP_S: Final = 0.02
"""Least time between two looks, seconds: a storm of notifications costs at most 50 reads a
second."""


class Hub:
    """The process's wake-ups and its count of open streams (at most ``max_streams``).

    Lives on one event loop (the server's); nothing starts before the first subscriber.
    """

    def __init__(self, store: JobQueue, *, poll_seconds: float, max_streams: int) -> None:
        self._store = store
        self._poll_seconds = poll_seconds
        self.max_streams = max_streams
        self.open = 0
        """Streams reserved or running now."""
        self.looks = 0
        """Reads of the whole log so far (the cost of all idle streams together)."""
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._listening = False

    def reserve(self) -> None:
        """Count a stream about to open; ``Unavailable`` (503) at ``max_streams``. The
        caller must ``release`` it once the stream ends, whatever happens."""
        if self.open >= self.max_streams:
            raise Unavailable(f"this server streams at most {self.max_streams} at once; poll")
        self.open += 1

    def release(self) -> None:
        self.open -= 1

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``job_id`` may have new events, for the block's length.

        Events appended after this is entered set it (or are in the caller's next read):
        clear it, then read, then wait on it.
        """
        woken = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(woken)
        try:
            await self._ensure_running()
            yield woken
        finally:
            waiters = self._waiters.get(job_id, set())
            waiters.discard(woken)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def _ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        cursor = await to_thread.run_sync(self._store.last_event_id)
        if self._task is None or self._task.done():  # another subscriber may have started it
            self._wake = asyncio.Event()
            self._listen(asyncio.get_running_loop(), self._wake)
            self._task = asyncio.create_task(self._run(cursor, self._wake))

    def _listen(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        """Have the store's notifications (PostgreSQL's; SQLite has none) set ``wake``."""
        if self._listening:
            return
        self._listening = True

        def notified() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._notified)

        self._store.on_event(notified)

    def _notified(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self, cursor: int, wake: asyncio.Event) -> None:
        """Look at the log while anyone listens; wake the waiters of jobs with new events."""
        while self._waiters:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._poll_seconds)
            wake.clear()
            read = functools.partial(self._store.events_after, cursor, limit=BATCH)
            try:
                events = await to_thread.run_sync(read)
            except Exception:  # a database blip: streams still re-read at each heartbeat
                log.warning("live streams: the event log could not be read", exc_info=True)
                continue
            self.looks += 1
            for job_id in {event.job_id for event in events}:
                for woken in self._waiters.get(job_id, ()):
                    woken.set()
            if events:
                cursor = events[-1].id
            if len(events) == BATCH:
                wake.set()
            await asyncio.sleep(MIN_GAP_S)
