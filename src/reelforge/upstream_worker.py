"""The upstream pool's worker: jobs of hosted models (``engine = "upstream"``), many at once.

A hosted job computes nothing here: it waits on a provider. So one process runs up to
``upstream_concurrency`` of them on threads behind one claim loop, sharing one engine per
model, and never takes a GPU worker's place (``reelforge worker --upstream``; ``serve``
starts one when the registry has a hosted model). Each job: submit (unless an earlier attempt
did: the provider's id is kept with the job at once, so a restarted worker polls the same
provider job), wait, stream the provider's MP4 to the scratch file, check it with PyAV, store
it as it is (no encode), complete. A client's cancel cancels at the provider where it can; a
failure that is not the request's (``UpstreamFailed``, ``TimedOut``) hands the job to the
model's ``fallback`` when it has one.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from reelforge.engines.base import RemoteEngine
from reelforge.errors import Cancelled, TimedOut, UpstreamFailed
from reelforge.jobs.model import Completed, Lease, Phase
from reelforge.media.probe import probe_mp4
from reelforge.retry import retrying
from reelforge.worker import Signals, Worker, _database_blip, _Heartbeat, _Run, _storage

log = logging.getLogger("reelforge.upstream")


class UpstreamWorker(Worker):
    """A ``Worker`` whose ``run_many`` runs many hosted jobs at once (module docstring)."""

    def run_many(self, signals: Signals, jobs: int) -> None:
        """Claim and run up to ``jobs`` jobs at once, each on a thread of its own, until
        ``signals.drain`` is set (then wait for the running ones). For engines that wait
        rather than compute (hosted providers): one claim loop, one set of engines."""
        slots = threading.BoundedSemaphore(jobs)
        with ThreadPoolExecutor(jobs, thread_name_prefix="reelforge-upstream") as pool:
            while not signals.drain.is_set():
                if not slots.acquire(timeout=self.settings.poll_seconds):
                    continue
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
                    slots.release()
                    self._idle(signals)
                    continue
                pool.submit(self._process_in_slot, lease, signals.halt, slots)

    def _process_in_slot(
        self, lease: Lease, halt: threading.Event, slots: threading.BoundedSemaphore
    ) -> None:
        try:
            self.process(lease, halt)
        except Exception:  # storage or database away: the lease lapses, the job is retried
            log.exception("job %s could not be recorded; it will be retried", lease.job.id)
        finally:
            slots.release()

    def _remote(self, run: _Run, beat: _Heartbeat, engine: RemoteEngine) -> None:
        """A hosted provider makes the video: submit (unless an earlier attempt did: the
        provider's id is kept with the job at once), wait, stream its MP4 to the scratch
        file, check it with PyAV and store it as it is (no encode)."""
        job = run.lease.job
        upstream_id = job.upstream_id
        try:
            if upstream_id is None:
                keyframes = self._keyframes(run.lease)
                beat.set_phase(Phase.GENERATING)
                upstream_id = engine.submit(job.request, keyframes, beat.on_step)
                self._keep_upstream_id(run, engine, upstream_id)
            beat.set_phase(Phase.GENERATING)
            engine.fetch(upstream_id, run.target, beat.on_step)
            beat.set_phase(Phase.STORING)
            try:
                facts = probe_mp4(run.target)
            except ValueError as exc:
                raise UpstreamFailed(f"the provider's video is unusable: {exc}") from exc
            key = _storage(self.storage.save_video, run.name, run.target)
        except Exception as exc:  # noqa: BLE001 (every failure ends in a state, never the worker)
            run.target.unlink(missing_ok=True)
            self._remote_failed(run, beat, engine, upstream_id, exc)
            return
        run.target.unlink(missing_ok=True)
        meta = {"video": facts, "upstream": {"id": upstream_id}}
        self._end(run, beat, Completed(key, run.seconds(), meta))

    def _keep_upstream_id(self, run: _Run, engine: RemoteEngine, upstream_id: str) -> None:
        """Record the provider's id, trying again while the database is away. If the lease
        was lost meanwhile, the job's next holder cannot know this provider job: it is
        cancelled there, and ``Cancelled`` raised."""
        kept = retrying(
            lambda: self.store.set_upstream(run.lease, upstream_id),
            retry_on=_database_blip,
            seconds=self.settings.lease_seconds / 3,
            pause=0.05,
            max_pause=1.0,
        )
        if not kept:
            engine.cancel(upstream_id)
            raise Cancelled

    def _remote_failed(
        self,
        run: _Run,
        beat: _Heartbeat,
        engine: RemoteEngine,
        upstream_id: str | None,
        exc: Exception,
    ) -> None:
        """Settle a hosted job after ``exc``: a client's cancel (or delete) cancels it at the
        provider too; a failure not of the request's making goes to the model's fallback."""
        job_id = run.lease.job.id
        if isinstance(exc, Cancelled) and beat.lost and upstream_id is not None:
            job = self.store.get(job_id)
            if job is None or job.cancel_requested_at is not None:
                engine.cancel(upstream_id)
        if engine.fallback and isinstance(exc, UpstreamFailed | TimedOut) and not beat.lost:
            beat.stop()
            log.warning("job %s: %s; handed to %s", job_id, exc.message, engine.fallback)
            reason = f"fallback: {exc.name}: {exc.message}"
            self.store.fall_back(run.lease, model=engine.fallback, reason=reason)
            return
        self._after(run, beat, exc)
