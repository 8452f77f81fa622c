"""The worker: claim → fetch inputs → engine → encode → store → complete.

A worker holds each job under a lease that a heartbeat thread renews (carrying progress and
the job's phase); if the lease is lost (taken over after an expiry), the job is abandoned at
the next step and nothing it produced is recorded. A failure of the request or of the engine
ends the job in ``error``; a failure that is not the job's fault (storage or database away,
scratch disk full) queues it again with backoff, ``StorageFailed`` once retries run out; no
failure ever ends the worker. Scratch files of a failed attempt are removed at once.

A job running past its model's ``job_timeout_seconds`` (wall clock from its claim) stops at
its engine's next ``on_step`` and ends in ``error``, ``TimedOut``, the worker going on. A step
that never calls back cannot be stopped from another thread: once the grace after the limit
(``stuck_grace``) is over too, the heartbeat ends the job ``TimedOut`` itself and calls
``on_stuck`` (a worker process drains and exits, and its supervisor starts a fresh one).
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

from reelforge.engines.base import Engine, Keyframes
from reelforge.errors import Cancelled, ReelforgeError, TimedOut
from reelforge.jobs.model import (
    CANCELLED,
    REPORT_SECONDS,
    STORAGE_FAILED,
    Completed,
    Failed,
    Lease,
    Outcome,
    Phase,
    Store,
)
from reelforge.media.encoder import EncoderOptions, encode_mp4
from reelforge.media.fetch import FetchPolicy, fetch_image
from reelforge.media.intake import load_image
from reelforge.media.watermark import watermarked
from reelforge.optimizer import PromptOptimizer
from reelforge.request import ImageRef
from reelforge.retention import Retention
from reelforge.retry import retrying
from reelforge.settings import Settings
from reelforge.storage.base import Storage
from reelforge.video import Video

log = logging.getLogger("reelforge.worker")
T = TypeVar("T")

SCRATCH_MAX_AGE_SECONDS = 6 * 3600
"""Scratch files older than this, found at a worker's start, were left by a killed worker."""
MAX_RETRY_DELAY_SECONDS = 300.0
"""The longest backoff before a job that met a storage blip is claimed again."""
PRUNE_EVERY_SECONDS = 60.0
"""How often some idle worker prunes the event log."""


class StorageBlip(Exception):
    """Inputs or the video could not be loaded or stored for a reason that is not the job's
    (storage or database away, scratch disk full); ``__cause__`` holds the original."""


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
        store: Store,
        storage: Storage,
        engines: Mapping[str, Engine],
        *,
        worker_id: str | None = None,
        job_timeouts: Mapping[str, float] | None = None,
        on_stuck: Callable[[], None] = lambda: None,
        optimizer: PromptOptimizer | None = None,
    ) -> None:
        """``job_timeouts``: model id → its jobs' wall-clock limit in seconds (default: the
        settings' ``job_timeout_seconds``); ``on_stuck`` is called (on a heartbeat thread)
        when a job's step has not returned by the end of its limit's grace; ``optimizer``
        rewrites prompts (default: none configured, prompts are used as given)."""
        self.optimizer = optimizer or PromptOptimizer(None)
        self.settings = settings
        self.job_timeouts = dict(job_timeouts or {})
        self.on_stuck = on_stuck
        self.store = store
        self.storage = storage
        self.engines = engines
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.encoder = EncoderOptions(preset=settings.x264_preset, crf=settings.x264_crf)
        self.fetch_policy = FetchPolicy(
            deadline_seconds=settings.fetch_deadline_seconds,
            allow_private=settings.fetch_allow_private,
        )
        self._finisher = _Finisher()
        self._reported = 0.0
        self._next_prune = 0.0
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
        try:
            self._prune_events()
        except Exception:  # the database is away: the next idle pass tries again
            log.exception("pruning the event log failed")
        signals.wake.wait(self.settings.poll_seconds)
        signals.wake.clear()

    def _prune_events(self) -> None:
        """Drop old progress events, by one worker at a time, every ``PRUNE_EVERY_SECONDS``."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_SECONDS
        if self.store.take_chore(
            "prune-events", holder=self.worker_id, seconds=PRUNE_EVERY_SECONDS
        ):
            self.store.prune_events()

    def process(self, lease: Lease, halt: threading.Event) -> None:
        """Run one claimed job to its end: completed, error, or released.

        A model's finished frames are encoded on the finisher thread, so this returns as
        soon as the model is free and the next job can start on it (at most one encode is
        pending); a preview's frames are rendered by encoding them, here. The prompt is
        rewritten (``optimizer``) while the inputs are fetched; the engine waits for it at
        most the optimizer's timeout, in phase ``optimizing``.
        """
        run = _Run(lease, self.storage.scratch)
        limit = self.job_timeouts.get(lease.job.model, self.settings.job_timeout_seconds)
        deadline = _Deadline(run.started + limit, limit, stuck_grace(self.settings, limit))
        beat = _Heartbeat(
            self.store, run, self.settings.lease_seconds, halt, deadline, self.on_stuck
        )
        beat.start()
        pending = self.optimizer.start(lease.job.request, lease.job.model)
        keyframes = self._attempt(run, beat, lambda: self._keyframes(lease))
        if keyframes is None:
            return
        if not pending.done():
            beat.set_phase(Phase.OPTIMIZING)
        rewrite = pending.result()
        run.meta["prompt"] = rewrite.meta()
        request = rewrite.applied(lease.job.request)
        beat.set_phase(Phase.GENERATING)
        engine = self.engines[lease.job.model]
        video = self._attempt(run, beat, lambda: engine.generate(request, keyframes, beat.on_step))
        if video is None:
            return
        if lease.job.request.watermark:
            video = watermarked(video)
        if video.rendered:
            self._finisher.submit(lambda: self._encode(run, beat, video))
        else:
            self._encode(run, beat, video)

    def _keyframes(self, lease: Lease) -> Keyframes:
        request = lease.job.request
        return Keyframes(
            first=self._image(request.first_frame), last=self._image(request.last_frame)
        )

    def _image(self, ref: ImageRef | None) -> Image.Image | None:
        if ref is None:
            return None
        if ref.url is not None:
            return fetch_image(ref.url, field=ref.field, policy=self.fetch_policy)
        assert ref.key is not None
        return load_image(_storage(self.storage.load_input, ref.key), field=ref.field)

    def _encode(self, run: _Run, beat: _Heartbeat, video: Video) -> None:
        """Encode to the scratch file (a preview renders as it is encoded), store, complete."""
        beat.set_phase(Phase.ENCODING if video.rendered else Phase.GENERATING)

        def encode_and_store() -> tuple[str, int]:
            try:
                encode_mp4(video, run.target, self.encoder, beat.on_encoded)
                size = run.target.stat().st_size
            except OSError as exc:  # the scratch disk is full or gone
                raise StorageBlip(f"the scratch file could not be written: {exc}") from exc
            beat.set_phase(Phase.STORING)
            return _storage(self.storage.save_video, run.name, run.target), size

        stored = self._attempt(run, beat, encode_and_store)
        run.target.unlink(missing_ok=True)
        if stored is not None:
            key, size = stored
            # The MP4 as stored: its size in pixels (not the model's canvas) and in bytes.
            facts = {**video.meta, "width": video.width, "height": video.height, "bytes": size}
            self._end(run, beat, Completed(key, run.seconds(), {"video": facts, **run.meta}))

    def _attempt(self, run: _Run, beat: _Heartbeat, work: Callable[[], T]) -> T | None:
        """``work()``, or None once a failure has ended the job (error, requeued, released,
        lost); the attempt's scratch file is removed first."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 (every failure ends in a state, never the worker)
            run.target.unlink(missing_ok=True)
            self._after(run, beat, exc)
            return None

    def _after(self, run: _Run, beat: _Heartbeat, exc: Exception) -> None:
        """Settle the job after ``work`` raised ``exc``."""
        if isinstance(exc, Cancelled):
            self._give_back(run, beat)
        elif isinstance(exc, StorageBlip):
            self._retry_later(run, beat, exc)
        elif isinstance(exc, ReelforgeError):
            self._end(run, beat, Failed(exc.name, exc.message, run.seconds()))
        else:
            log.error("engine failed on job %s", run.lease.job.id, exc_info=exc)
            message = f"the generator failed: {exc}"
            self._end(run, beat, Failed("EngineFailed", message, run.seconds()))

    def _end(self, run: _Run, beat: _Heartbeat, outcome: Outcome) -> None:
        """Record how the job ended, trying again while the database is away (the heartbeat
        keeps the lease meanwhile); a video whose completion was refused is discarded, and so
        is one whose job its owner deleted while it was being made.

        A try that failed may still have committed (the connection dropped after the commit),
        so a refusal after a retry is checked against the job before the video goes; if the
        database stays away the video is kept (the lease lapses and the job is retried, and
        retention removes what nobody recorded)."""
        try:
            recorded = retrying(
                lambda: self.store.finish(run.lease, outcome),
                retry_on=_database_blip,
                seconds=self.settings.lease_seconds / 3,  # well inside the lease it keeps
                pause=0.05,
                max_pause=1.0,
            )
        finally:
            beat.stop()
        if not isinstance(outcome, Completed):
            return
        job = self.store.get(run.lease.job.id)  # None too once its owner deleted it
        if job is not None and (recorded or job.video_key == outcome.video_key):
            return  # recorded (or an earlier try committed it)
        why = "its owner deleted it" if recorded else "its lease was lost"
        log.warning("job %s: %s; its video is discarded", run.lease.job.id, why)
        self.storage.discard(outcome.video_key)

    def _retry_later(self, run: _Run, beat: _Heartbeat, blip: StorageBlip) -> None:
        """Queue the job again with backoff, or end it ``StorageFailed`` when retries ran out."""
        job = run.lease.job
        cause = f"{blip}" + (f" ({blip.__cause__})" if blip.__cause__ else "")
        if job.retries >= self.settings.storage_retries:
            message = f"inputs or video could not be stored after {job.retries + 1} tries: {cause}"
            self._end(run, beat, Failed(STORAGE_FAILED, message, run.seconds()))
            return
        delay = min(self.settings.storage_retry_seconds * 2**job.retries, MAX_RETRY_DELAY_SECONDS)
        beat.stop()
        log.warning(
            "job %s meets a storage blip (%s); queued again in %.1f s", job.id, cause, delay
        )
        self.store.requeue(run.lease, delay_seconds=delay, reason=f"storage: {cause}")

    def _give_back(self, run: _Run, beat: _Heartbeat) -> None:
        """Stopped at a step: halted (drain) → back to the queue uncharged; cancelled by the
        client → ``error``; lease lost → nothing (another worker holds the job)."""
        beat.stop()
        if not beat.lost:
            self.store.release(run.lease)
            log.info("job %s released without charge", run.lease.job.id)
            return
        job = self.store.get(run.lease.job.id)
        if job is not None and job.cancel_requested_at is not None:
            self._end(run, beat, Failed(CANCELLED, "cancelled by the client", run.seconds()))


def stuck_grace(settings: Settings, limit: float) -> float:
    """Seconds after a job's limit that its step gets to call back before the job is ended
    from outside and the process recycled: a lease period, or a tenth of the limit if longer
    (a diffusion step of a large model can take a minute)."""
    return max(settings.lease_seconds, limit / 10)


@dataclass(frozen=True)
class _Deadline:
    """A job's wall-clock limit: ``at`` (``time.perf_counter`` seconds), ``seconds`` (the
    limit), ``grace`` (the wait for a step that does not call back)."""

    at: float
    seconds: float
    grace: float

    def message(self) -> str:
        return f"the job ran past its model's limit of {self.seconds:g} s (job_timeout_seconds)"


def _storage(call: Callable[..., T], *args: Any) -> T:
    """A storage call; any failure of it is a ``StorageBlip`` (not the job's fault)."""
    try:
        return call(*args)
    except Exception as exc:
        raise StorageBlip(f"storage {call.__name__} failed") from exc


def _database_blip(exc: Exception) -> bool:
    """Whether to try recording a job's end again: always, while the deadline allows."""
    log.warning("recording a job's end failed; trying again", exc_info=exc)
    return True


class _Run:
    """One attempt at a job: its lease, its video's name and scratch file, when it started."""

    def __init__(self, lease: Lease, scratch: Path) -> None:
        self.lease = lease
        # Unique per attempt: a stale attempt's file never replaces the lease holder's.
        self.name = f"{lease.job.id}-{lease.token[:12]}"
        self.target = scratch / f"{self.name}.mp4"
        self.started = time.perf_counter()
        self.meta: dict[str, Any] = {}
        """What the generation's ``meta`` records besides its video (``prompt``)."""

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
    the lease is lost or the worker is halted, ``TimedOut`` past the deadline. Past the
    deadline's grace the beating thread ends the job itself and calls ``on_stuck``."""

    def __init__(
        self,
        store: Store,
        run: _Run,
        lease_seconds: float,
        halt: threading.Event,
        deadline: _Deadline,
        on_stuck: Callable[[], None],
    ) -> None:
        self._store, self._lease, self._lease_seconds = store, run.lease, lease_seconds
        self._run, self._halt, self._deadline = run, halt, deadline
        self._on_stuck = on_stuck  # called on the beating thread
        self._done = threading.Event()
        self._progress = 0
        self._generated = self._encoded = 0.0  # shares of the engine's steps, of the frames
        self._phase = Phase.PREPARING
        self.lost = False
        self._thread = threading.Thread(target=self._beat, name="reelforge-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (idempotent); returns once the beating thread has ended."""
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def set_phase(self, phase: Phase) -> None:
        """The job now does ``phase`` (sent with the next beat, within half a second)."""
        self._phase = phase

    def on_step(self, done: int, total: int) -> None:
        """The engine's steps: progress up to 90."""
        self._generated = done / max(total, 1)
        self._progress = min(99, int(90 * self._generated + 10 * self._encoded))
        if self.lost or self._halt.is_set():
            raise Cancelled
        if time.perf_counter() >= self._deadline.at:
            raise TimedOut(self._deadline.message())

    def on_encoded(self, done: int, total: int) -> None:
        """Frames encoded: the last 10 of the progress (a preview's frames are encoded as
        they are made, so both rise together; 100 is set when the job completes)."""
        self._encoded = done / max(total, 1)
        self._progress = min(99, int(90 * self._generated + 10 * self._encoded))

    def _beat(self) -> None:
        interval = min(0.5, self._lease_seconds / 3)
        reported: tuple[int, Phase] = (0, Phase.PREPARING)
        last_renewal = time.monotonic()
        while not self._done.wait(interval):
            if time.perf_counter() >= self._deadline.at + self._deadline.grace:
                self._end_stuck()
                return
            due = time.monotonic() - last_renewal >= self._lease_seconds / 3
            state = (self._progress, self._phase)
            if state == reported and not due:
                continue
            try:
                kept = self._store.heartbeat(
                    self._lease,
                    lease_seconds=self._lease_seconds,
                    progress=state[0],
                    phase=state[1],
                )
            except Exception:  # a busy database: the next beat tries again
                log.exception("heartbeat failed on job %s", self._lease.job.id)
                continue
            reported, last_renewal = state, time.monotonic()
            if not kept:
                self.lost = True
                return

    def _end_stuck(self) -> None:
        """The job's step has not called back within the grace: end it ``TimedOut`` here
        (whatever it makes later is refused: the lease is over) and ask for a new process,
        unless the job ended meanwhile (the worker recorded it first)."""
        self.lost = True
        message = f"{self._deadline.message()}; its step did not stop, the worker restarts"
        try:
            stuck = self._store.finish(
                self._lease, Failed(TimedOut.__name__, message, self._run.seconds())
            )
        except Exception:  # the database is away: the lease lapses and the job is retried
            log.exception("could not record the end of job %s", self._lease.job.id)
            stuck = True
        if stuck:
            log.error("job %s: %s", self._lease.job.id, message)
            self._on_stuck()
