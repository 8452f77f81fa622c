"""Supervision of worker processes (``reelforge serve``, ``reelforge worker --processes N``).

Each of ``count`` slots holds one worker process. A process that ends is reaped at once (no
zombie), its end logged (pid, exit code or signal) and a new one started after a backoff that
doubles from ``RESTART_FIRST_DELAY_S`` to ``RESTART_MAX_DELAY_S`` and starts over once a
process has lived ``STABLE_SECONDS``. A process that ends before it reports ready (its
engines loaded, its threads claiming) died at start; ``CRASH_LOOP_DEATHS`` such deaths in a
row of one slot raise ``CrashLoop``: the parent then stops and exits non-zero, so that
systemd or Kubernetes see a deployment that cannot work instead of one that retries forever.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Final

from reelforge.runtime import run_worker, stop_workers
from reelforge.settings import Settings

log = logging.getLogger("reelforge.supervise")

RESTART_FIRST_DELAY_S: Final = 0.5
RESTART_MAX_DELAY_S: Final = 30.0
STABLE_SECONDS: Final = 60.0
"""A process that lived this long was healthy: its slot's backoff starts over."""
CRASH_LOOP_DEATHS: Final = 5
"""Deaths at start in a row of one slot that stop the supervisor."""
CHECK_INTERVAL_S: Final = 0.2
"""How often ended processes are looked for (the longest a death goes unnoticed)."""


class CrashLoop(Exception):
    """A worker process keeps dying before it is ready; the message says how it ended."""


@dataclass
class _Slot:
    """One worker's place: its current process (None while waiting to restart)."""

    index: int
    process: BaseProcess | None = None
    ready: Event | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    delay: float = RESTART_FIRST_DELAY_S
    early_deaths: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Keeps ``count`` worker processes of ``settings`` running (see the module docstring).

    ``run`` is the loop (on any thread); ``close`` stops restarting and drains the workers.
    ``clock`` is in seconds (monotonic).
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        upstream: bool = False,
    ) -> None:
        """``upstream``: the processes are the hosted models' pool (``worker --upstream``)."""
        self.settings = settings
        self.upstream = upstream
        self.slots = [_Slot(index) for index in range(count)]
        self._clock = clock
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closed = False

    def processes(self) -> list[BaseProcess]:
        """The worker processes running now."""
        return [slot.process for slot in self.slots if slot.process is not None]

    def run(self, stop: threading.Event) -> None:
        """Start every worker, then reap and restart them until ``stop`` is set or ``close``
        is called; raises ``CrashLoop`` if one keeps dying at start."""
        while not stop.is_set() and not self._closed:
            self.check()
            stop.wait(CHECK_INTERVAL_S)

    def check(self) -> None:
        """One pass: reap and log ended processes, start those whose backoff is over."""
        now = self._clock()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():  # is_alive() reaps it
                process.join()
                self._ended(slot, process, now)
            if slot.process is None and now >= slot.restart_at:
                self._start(slot, now)

    def close(self, timeout: float) -> None:
        """Stop restarting; SIGTERM the workers (they drain), kill any left after
        ``timeout`` seconds."""
        with self._lock:
            self._closed = True
        stop_workers(self.processes(), timeout)

    def _start(self, slot: _Slot, now: float) -> None:
        with self._lock:
            if self._closed:
                return
            slot.ready = self._context.Event()
            slot.process = self._context.Process(
                target=run_worker,
                args=(self.settings,),
                kwargs={"child": True, "ready": slot.ready, "upstream": self.upstream},
                name=f"reelforge-{'upstream' if self.upstream else 'worker'}-{slot.index}",
            )
            slot.process.start()
        slot.started_at = now
        assert slot.process.pid is not None
        slot.pids.append(slot.process.pid)
        if len(slot.pids) > 1:
            log.warning("worker %d restarted as pid %d", slot.index, slot.process.pid)

    def _ended(self, slot: _Slot, process: BaseProcess, now: float) -> None:
        """Log how ``process`` ended and plan its restart; ``CrashLoop`` past the limit."""
        slot.process = None
        if self._closed:
            return
        how = describe_exit(process.exitcode)
        at_start = slot.ready is None or not slot.ready.is_set()
        slot.early_deaths = slot.early_deaths + 1 if at_start else 0
        if slot.early_deaths >= CRASH_LOOP_DEATHS:
            raise CrashLoop(
                f"worker process {slot.index} died at start {slot.early_deaths} times in a row "
                f"(last: pid {process.pid}, {how}); its log above says why"
            )
        if now - slot.started_at >= STABLE_SECONDS:
            slot.delay = RESTART_FIRST_DELAY_S
        slot.restart_at = now + slot.delay
        log.warning(
            "worker %d (pid %s) %s %s; restarting in %.1f s",
            slot.index,
            process.pid,
            "died at start:" if at_start else "died:",
            how,
            slot.delay,
        )
        slot.delay = min(slot.delay * 2, RESTART_MAX_DELAY_S)


class SupervisorThread:
    """``supervisor`` run on a thread beside a server that holds the main thread (uvicorn):
    a crash loop is kept in ``failure`` and this process gets SIGTERM, so that the server
    shuts down and its caller can report why."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.failure: CrashLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reelforge-supervisor")
        if supervisor.slots:
            self._thread.start()

    def _run(self) -> None:
        try:
            self.supervisor.run(self._stop)
        except CrashLoop as exc:
            self.failure = exc
            os.kill(os.getpid(), signal.SIGTERM)

    def close(self, timeout: float) -> None:
        """Stop the thread, then the workers (``Supervisor.close``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.supervisor.close(timeout)


def describe_exit(exitcode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` (multiprocessing's negative exit codes)."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
