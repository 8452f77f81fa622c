"""Retention: delete videos and input images some days after their jobs end.

A sweep is a chore one worker runs at a time (a named lease in the job store): it takes a
batch of ended jobs past the cut-off, deletes their videos and the input images no other
live job refers to, and marks them purged. Safe to run from every worker: whoever does not
hold the chore skips it; a worker that dies mid-sweep leaves files that the next sweep
deletes again (deleting is idempotent).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from reelforge.jobs.model import Coordination, Job, JobArchive
from reelforge.storage.base import Storage

log = logging.getLogger("reelforge.retention")

CHORE = "retention"


class _RetentionStore(JobArchive, Coordination, Protocol):
    """What a sweep needs of the store: ended jobs, and a named lease to run alone."""


BATCH = 200
"""Jobs purged per batch."""


def discard_files(store: JobArchive, storage: Storage, jobs: Sequence[Job]) -> None:
    """Delete the videos of ``jobs`` (and any a killed earlier attempt left behind) and the
    input images no other job, neither purged nor deleted, refers to. Idempotent. Used by the
    sweep and by an owner's delete (whose job the sweep marks purged once it has ended, deleting
    a video its worker stored after the delete)."""
    ids = [job.id for job in jobs]
    inputs = {key for job in jobs for key in job.request.input_keys}
    for key in sorted(inputs - store.inputs_in_use(inputs, excluding=ids)):
        storage.discard(key)
    for job in jobs:
        if job.video_key:
            storage.discard(job.video_key)
        storage.discard_videos(f"{job.id}-")


class Retention:
    """Sweeps once every ``every_seconds`` when asked by an idle worker."""

    def __init__(
        self,
        store: _RetentionStore,
        storage: Storage,
        *,
        days: float,
        holder: str,
        every_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.storage = store, storage
        self.keep_seconds = days * 86400
        self.holder, self.every_seconds, self.clock = holder, every_seconds, clock
        self._next = 0.0

    def maybe_sweep(self) -> int:
        """Sweep if the interval has passed and the chore is ours; jobs purged."""
        now = self.clock()
        if now < self._next:
            return 0
        self._next = now + self.every_seconds
        if not self.store.take_chore(CHORE, holder=self.holder, seconds=self.every_seconds):
            return 0
        return self.sweep(now)

    def sweep(self, now: float) -> int:
        """Purge every job that ended more than ``days`` before ``now``; how many."""
        purged = 0
        while batch := self.store.finished_before(now - self.keep_seconds, limit=BATCH):
            discard_files(self.store, self.storage, batch)
            self.store.mark_purged([job.id for job in batch])
            purged += len(batch)
        if purged:
            log.info("retention: purged the files of %d job(s)", purged)
        return purged
