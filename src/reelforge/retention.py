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
from collections.abc import Callable
from typing import Protocol

from reelforge.jobs.model import Coordination, JobArchive
from reelforge.storage.base import Storage

log = logging.getLogger("reelforge.retention")

CHORE = "retention"


class _RetentionStore(JobArchive, Coordination, Protocol):
    """What a sweep needs of the store: ended jobs, and a named lease to run alone."""


BATCH = 200
"""Jobs purged per batch."""


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
            ids = [job.id for job in batch]
            inputs = {key for job in batch for key in job.request.input_keys}
            still_used = self.store.inputs_in_use(inputs, excluding=ids)
            for key in sorted(inputs - still_used):
                self.storage.discard(key)
            for job in batch:  # its video, and any a killed earlier attempt left behind
                if job.video_key:
                    self.storage.discard(job.video_key)
                self.storage.discard_videos(f"{job.id}-")
            self.store.mark_purged(ids)
            purged += len(ids)
        if purged:
            log.info("retention: purged the files of %d job(s)", purged)
        return purged
