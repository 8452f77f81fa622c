"""The worker: claim → fetch inputs → engine → encode → store → complete.

A worker holds each job under a lease that a heartbeat thread renews (carrying progress);
if the lease is lost (taken over after an expiry), the job is abandoned at the next step
and nothing it produced is recorded. A failure of the request or of the engine ends the job
in ``error``; it never ends the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from reelforge.contract import Resolution
from reelforge.engines.base import Engine, OnStep, Video, VideoRequest
from reelforge.errors import Cancelled, ReelforgeError
from reelforge.jobs.model import CANCELLED, REPORT_SECONDS, Job, JobStore, Lease
from reelforge.media.encoder import encode_mp4
from reelforge.media.fetch import fetch_image
from reelforge.media.intake import load_image
from reelforge.retention import Retention
from reelforge.settings import Settings
from reelforge.storage.base import Storage

log = logging.getLogger("reelforge.worker")
T = TypeVar("T")

SCRATCH_MAX_AGE_SECONDS = 6 * 3600
"""Scratch files older than this, found at a worker's start, were left by a killed worker."""


@dataclass
class Signals:
    """How a worker is told things: ``drain`` (claim nothing new), ``halt`` (give the running
    job back, uncharged) and ``wake`` (new work may be queued: claim now, not at the next
    poll)."""

    drain: threading.Event = field(default_factory=threading.Event)
    halt: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)

    def start_draining(self) -> None:
        self.drain.set()
        self.wake.set()


class Worker:
    """Runs jobs of the models in ``engines`` (model id → loaded engine) one at a time."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: Storage,
        engines: Mapping[str, Engine],
        *,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.engines = engines
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._finisher = _Finisher()
        self._reported = 0.0
        self.retention = None
        if settings.retention_days is not None:
            self.retention = Retention(
                store, storage, days=settings.retention_days, holder=self.worker_id
            )

    def run(self, signals: Signals) -> None:
        """Claim and run jobs until ``signals.drain`` is set."""
        swept = self.storage.sweep_scratch(SCRATCH_MAX_AGE_SECONDS)
        if swept:
            log.info("removed %d stale scratch file(s)", swept)
        while not signals.drain.is_set():
            try:
                lease = self.store.claim(
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.lease_seconds,
                    models=list(self.engines),
                )
            except Exception:  # the database is busy or away: try again, never die of it
                log.exception("claim failed; retrying")
                lease = None
            if lease is None:
                self._idle(signals)
                continue
            try:
                self.process(lease, signals.halt)
            except Exception:  # storage or database away: the lease lapses, the job is retried
                log.exception("job %s could not be recorded; it will be retried", lease.job.id)
        self.finish_pending()

    def finish_pending(self) -> None:
        """Wait for the video being encoded on the finisher thread, if any."""
        self._finisher.wait()

    def report(self) -> None:
        """Tell the store this worker is alive with its models loaded (for ``/readyz``); at
        most once every ``REPORT_SECONDS``."""
        now = time.monotonic()
        if now - self._reported >= REPORT_SECONDS:
            self.store.report_worker(self.worker_id, models=list(self.engines))
            self._reported = now

    def _idle(self, signals: Signals) -> None:
        """Between jobs: the retention chore if it is due, then wait for work or the poll."""
        try:
            self.report()
        except Exception:  # the database is away: the next idle pass tries again
            log.exception("could not report this worker")
        if self.retention is not None:
            try:
                self.retention.maybe_sweep()
            except Exception:  # storage or database away: the next sweep tries again
                log.exception("retention sweep failed")
        signals.wake.wait(self.settings.poll_seconds)
        signals.wake.clear()

    def process(self, lease: Lease, halt: threading.Event) -> None:
        """Run one claimed job to its end: completed, error, or released.

        A model's finished frames are encoded on the finisher thread, so this returns as
        soon as the model is free and the next job can start on it (at most one encode is
        pending); a preview's frames are rendered by encoding them, here.
        """
        run = _Run(lease, self.storage.scratch)
        beat = _Heartbeat(self.store, lease, self.settings.lease_seconds, halt)
        beat.start()
        video = self._attempt(run, beat, lambda: self._generate(lease.job, beat.on_step))
        if video is None:
            return
        if video.rendered:
            self._finisher.submit(lambda: self._encode(run, beat, video))
        else:
            self._encode(run, beat, video)

    def _generate(self, job: Job, on_step: OnStep) -> Video:
        request = VideoRequest(
            prompt=job.request["prompt"],
            duration_s=job.request["duration"],
            resolution=Resolution(job.request["resolution"]),
            seed=job.request.get("seed"),
            first_frame=self._image(job.request.get("first_frame")),
            last_frame=self._image(job.request.get("last_frame")),
            prompt_optimizer=job.request.get("prompt_optimizer", True),
        )
        return self.engines[job.model].generate(request, on_step)

    def _encode(self, run: _Run, beat: _Heartbeat, video: Video) -> None:
        def encode() -> bool:
            encode_mp4(video, run.target, self.settings.encoder)
            return True

        if self._attempt(run, beat, encode):
            beat.stop()
            self._finish(run, {"video": video.meta})

    def _attempt(self, run: _Run, beat: _Heartbeat, work: Callable[[], T]) -> T | None:
        """``work()``, or None once a failure has ended the job (error, released, lost)."""
        try:
            return work()
        except Cancelled:
            beat.stop()
            self._give_back(run, beat)
        except ReelforgeError as exc:
            beat.stop()
            self._fail(run, exc.name, exc.message)
        except Exception as exc:
            beat.stop()
            log.exception("engine failed on job %s", run.lease.job.id)
            self._fail(run, "EngineFailed", f"the generator failed: {exc}")
        return None

    def _image(self, ref: dict[str, str] | None) -> Image.Image | None:
        if ref is None:
            return None
        if "url" in ref:
            return fetch_image(ref["url"], field=ref["field"], policy=self.settings.fetch_policy)
        return load_image(self.storage.load_input(ref["key"]), field=ref["field"])

    def _finish(self, run: _Run, meta: dict[str, Any]) -> None:
        key = self.storage.save_video(run.name, run.target)
        credits = run.seconds()
        if not self.store.complete(run.lease, video_key=key, credits_used=credits, meta=meta):
            log.warning("lease on job %s was lost; its video is discarded", run.lease.job.id)
            self.storage.discard(key)

    def _fail(self, run: _Run, name: str, message: str) -> None:
        credits = run.seconds()
        if not self.store.fail(
            run.lease, error_name=name, error_message=message, credits_used=credits
        ):
            log.warning("lease on job %s was lost before it could fail", run.lease.job.id)

    def _give_back(self, run: _Run, beat: _Heartbeat) -> None:
        """Stopped at a step: halted (drain) → back to the queue uncharged; cancelled by the
        client → ``error``; lease lost → nothing (another worker holds the job)."""
        run.target.unlink(missing_ok=True)
        if not beat.lost:
            self.store.release(run.lease)
            log.info("job %s released without charge", run.lease.job.id)
            return
        job = self.store.get(run.lease.job.id)
        if job is not None and job.cancel_requested_at is not None:
            self._fail(run, CANCELLED, "cancelled by the client")


class _Run:
    """One attempt at a job: its lease, its video's name and scratch file, when it started."""

    def __init__(self, lease: Lease, scratch: Path) -> None:
        self.lease = lease
        # Unique per attempt: a stale attempt's file never replaces the lease holder's.
        self.name = f"{lease.job.id}-{lease.token[:12]}"
        self.target = scratch / f"{self.name}.mp4"
        self.started = time.perf_counter()

    def seconds(self) -> float:
        """Compute seconds spent so far (the job's ``credits_used``)."""
        return round(time.perf_counter() - self.started, 3)


class _Finisher:
    """One thread that encodes and records finished videos, one at a time; ``submit`` waits
    while one is still being encoded, so at most one is pending behind the model."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reelforge-encode")
        self._pending: Future[None] | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()
        self._pending = self._pool.submit(self._logged, work)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    @staticmethod
    def _logged(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # the lease lapses and the job is retried
            log.exception("a finished video could not be recorded")


class _Heartbeat:
    """Renews a lease on a thread and carries progress; ``on_step`` raises ``Cancelled`` once
    the lease is lost or the worker is halted."""

    def __init__(self, store: JobStore, lease: Lease, lease_seconds: float, halt: threading.Event):
        self._store, self._lease, self._lease_seconds = store, lease, lease_seconds
        self._halt = halt
        self._done = threading.Event()
        self._progress = 0
        self.lost = False
        self._thread = threading.Thread(target=self._beat, name="reelforge-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (idempotent); returns once the beating thread has ended."""
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def on_step(self, done: int, total: int) -> None:
        self._progress = min(99, done * 100 // max(total, 1))
        if self.lost or self._halt.is_set():
            raise Cancelled

    def _beat(self) -> None:
        interval = min(0.5, self._lease_seconds / 3)
        reported = -1
        last_renewal = time.monotonic()
        while not self._done.wait(interval):
            due = time.monotonic() - last_renewal >= self._lease_seconds / 3
            if self._progress == reported and not due:
                continue
            try:
                kept = self._store.heartbeat(
                    self._lease, lease_seconds=self._lease_seconds, progress=self._progress
                )
            except Exception:  # a busy database: the next beat tries again
                log.exception("heartbeat failed on job %s", self._lease.job.id)
                continue
            reported, last_renewal = self._progress, time.monotonic()
            if not kept:
                self.lost = True
                return
