"""Per-job metrics and logs, read from the event log: each job transition counted into
``reelforge.metrics`` and logged as one line (job id, model, state, seconds, attempt).

One reader per ``reelforge serve`` (``cli.serve`` runs it on a thread): the counts are
every job of the database, whichever process or machine moved it. It starts at the log's
end: a counter counts from the reader's start, as Prometheus counters do.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final

from reelforge.jobs.model import EventKind, JobEvent, JobQueue
from reelforge.logs import log_event
from reelforge.metrics import Metrics

log = logging.getLogger("reelforge.jobs")

BATCH: Final = 500
"""Events read per query."""
UNKNOWN_MODEL: Final = "unknown"
"""The model of a job gone from the store before its events were read (deleted)."""


@dataclass
class _Seen:
    """What the reader remembers of a job it saw queued or started (seconds, store clock)."""

    model: str
    since: float | None = None
    """When it was last queued."""
    started: float | None = None
    """When its running attempt started; None while queued."""
    attempt: int = 0


class JobMetrics:
    """Reads new events of ``store`` and counts them into ``metrics`` (``poll``, ``run``)."""

    def __init__(self, store: JobQueue, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._after = store.last_event_id()
        self._jobs: dict[str, _Seen] = {}

    def poll(self) -> int:
        """Count every event appended since the last call; how many were read."""
        read = 0
        while batch := self.store.events_after(self._after, limit=BATCH):
            for event in batch:
                self._count(event)
            self._after = batch[-1].id
            read += len(batch)
        return read

    def run(self, stop: threading.Event, *, interval: float) -> None:
        """``poll`` every ``interval`` seconds (sooner on the store's event hint) until
        ``stop`` is set. A failed read is logged and tried again at the next turn."""
        wake = threading.Event()
        self.store.on_event(wake.set)
        while not stop.is_set():
            wake.clear()
            try:
                self.poll()
            except Exception:  # a database blip must not end the metrics of the process
                log.exception("reading the event log for metrics failed; retrying")
            wake.wait(interval)

    def _count(self, event: JobEvent) -> None:
        if event.kind in (EventKind.PROGRESS, EventKind.DELETED):
            return
        seen = self._jobs.get(event.job_id) or self._look_up(event.job_id)
        at, model = event.created_at, seen.model
        seconds = 0.0
        if event.kind in (EventKind.QUEUED, EventKind.REQUEUED):
            seconds = self._queued(event, seen)
        elif event.kind is EventKind.STARTED:
            seen.attempt = int(event.data.get("attempts", seen.attempt + 1))
            seconds = at - seen.since if seen.since is not None else 0.0
            if seen.since is not None:
                self.metrics.queue_wait.labels(model=model).observe(seconds)
            seen.started = at
        else:
            seconds = self._ended(event, seen)
        log_event(
            log,
            f"job {event.job_id} {model} {event.kind.value} {seconds:.3f}s attempt {seen.attempt}",
            job_id=event.job_id,
            model=model,
            state=event.kind.value,
            seconds=round(seconds, 3),
            attempt=seen.attempt,
        )

    def _queued(self, event: JobEvent, seen: _Seen) -> float:
        """Count a ``queued`` or ``requeued`` event; the seconds the attempt ran (0 if new)."""
        if event.kind is EventKind.QUEUED:
            seen.attempt = 0  # a job looked up late may have been claimed since
            self.metrics.jobs_created.labels(model=seen.model).inc()
        else:
            reason = str(event.data.get("reason", "unknown"))
            self.metrics.jobs_requeued.labels(model=seen.model, reason=reason).inc()
        ran = self._busy(event, seen)
        seen.since, seen.started = event.created_at, None
        self._jobs[event.job_id] = seen
        return ran

    def _ended(self, event: JobEvent, seen: _Seen) -> float:
        """Count a terminal event; the seconds since the job started (else since queued)."""
        self._jobs.pop(event.job_id, None)
        model = seen.model
        if event.kind is EventKind.COMPLETED:
            self.metrics.jobs_completed.labels(model=model).inc()
            if seen.started is not None:
                self.metrics.generation_seconds.labels(model=model).observe(
                    event.created_at - seen.started
                )
        elif event.kind is EventKind.CANCELLED:
            self.metrics.jobs_cancelled.labels(model=model).inc()
        else:
            error = str(event.data.get("error_name", "unknown"))
            self.metrics.jobs_failed.labels(model=model, error=error).inc()
        ran = self._busy(event, seen)
        start = seen.started if seen.started is not None else seen.since
        return ran or (event.created_at - start if start is not None else 0.0)

    def _busy(self, event: JobEvent, seen: _Seen) -> float:
        """Add the running attempt's seconds (if one ran) to the busy time; return them."""
        if seen.started is None:
            return 0.0
        seconds = max(0.0, event.created_at - seen.started)
        self.metrics.busy_seconds.labels(model=seen.model).inc(seconds)
        return seconds

    def _look_up(self, job_id: str) -> _Seen:
        """A job first seen mid-way (queued before this reader started, or deleted since)."""
        job = self.store.get(job_id)
        if job is None:
            return _Seen(UNKNOWN_MODEL)
        seen = _Seen(job.model, since=job.created_at, attempt=job.attempts)
        self._jobs[job_id] = seen
        return seen
