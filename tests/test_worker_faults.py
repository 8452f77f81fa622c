"""Failures that are not the job's fault (storage or database away, a full scratch disk) queue
it again with backoff, counted apart from crash attempts, and end it ``StorageFailed`` only
when retries run out; the scratch files of a failed attempt are removed at once."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge.contract import Status
from reelforge.jobs.model import STORAGE_FAILED, EventKind, Job, Lease, Outcome
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import ImageRef, JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Video
from reelforge.worker import Worker
from tests.still_engine import StillEngine

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FlakyStorage(LocalStorage):
    """Local storage whose ``save_video``/``load_input`` fail the first ``failures`` calls."""

    def __init__(self, root: Path, *, failures: int) -> None:
        super().__init__(root, secret=b"s" * 32, url_ttl_seconds=60)
        self.failures = failures

    def save_video(self, name: str, source: Path) -> str:
        self._maybe_fail()
        return super().save_video(name, source)

    def load_input(self, key: str) -> bytes:
        self._maybe_fail()
        return super().load_input(key)

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the bucket is away")


class Rig:
    def __init__(self, tmp_path: Path, *, failures: int, retries: int = 3) -> None:
        self.clock = Clock()
        self.settings = Settings(
            data_dir=tmp_path,
            x264_preset="ultrafast",
            storage_retries=retries,
            storage_retry_seconds=10,
        )
        self.store = SQLiteJobStore(self.settings.database_path, clock=self.clock)
        self.storage = FlakyStorage(tmp_path, failures=failures)
        self.worker = Worker(self.settings, self.store, self.storage, {"preview": StillEngine()})

    def create(self, request: JobRequest | None = None) -> str:
        request = request or JobRequest(prompt="x")
        return self.store.create(owner="k", model="preview", request=request, max_attempts=2).id

    def run_once(self) -> bool:
        """Claim and process one job; False if none was claimable."""
        lease = self.store.claim(worker_id=self.worker.worker_id, lease_seconds=30)
        if lease is None:
            return False
        self.worker.process(lease, threading.Event())
        self.worker.finish_pending()
        return True

    def job(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None
        return job

    def scratch_files(self) -> list[Path]:
        return list(self.storage.scratch.iterdir())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path, failures=2)
    yield made
    made.store.close()


def test_a_storage_blip_requeues_with_backoff_then_the_job_completes(rig: Rig) -> None:
    job_id = rig.create()
    assert rig.run_once()
    job = rig.job(job_id)
    assert (job.status, job.retries, job.attempts) == (Status.QUEUED, 1, 0)
    assert job.run_after == T0 + 10
    assert rig.scratch_files() == []
    assert not rig.run_once(), "claimed before its backoff ended"
    rig.clock.now += 10
    assert rig.run_once()
    assert rig.job(job_id).run_after == T0 + 10 + 20  # the backoff doubles
    rig.clock.now += 20
    assert rig.run_once()
    done = rig.job(job_id)
    assert (done.status, done.retries, done.attempts) == (Status.COMPLETED, 2, 1)
    reasons = [
        event.data.get("reason", "")
        for event in rig.store.events_after(0, job_id=job_id)
        if event.kind is EventKind.REQUEUED
    ]
    assert len(reasons) == 2
    assert all("storage" in reason for reason in reasons)


def test_retries_run_out_in_storage_failed_not_worker_lost(tmp_path: Path) -> None:
    rig = Rig(tmp_path, failures=100, retries=1)
    job_id = rig.create()
    assert rig.run_once()
    rig.clock.now += 10
    assert rig.run_once()
    job = rig.job(job_id)
    assert (job.status, job.error_name) == (Status.ERROR, STORAGE_FAILED)
    assert job.error_message is not None
    assert "the bucket is away" in job.error_message
    assert job.attempts == 1  # crash attempts are not charged for blips
    assert rig.scratch_files() == []
    rig.store.close()


def test_an_input_that_cannot_be_loaded_is_a_blip_too(tmp_path: Path) -> None:
    rig = Rig(tmp_path, failures=0)
    png = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (640, 400), (10, 200, 30)).save(png)
    key = rig.storage.save_input(png.read_bytes())
    rig.storage.failures = 1
    job_id = rig.create(JobRequest(prompt="x", first_frame=ImageRef(field="image_url", key=key)))
    assert rig.run_once()
    assert (rig.job(job_id).status, rig.job(job_id).retries) == (Status.QUEUED, 1)
    rig.clock.now += 10
    assert rig.run_once()
    assert rig.job(job_id).status is Status.COMPLETED
    rig.store.close()


def test_a_full_scratch_disk_is_a_blip_and_leaves_no_scratch_file(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(video: Video, path: Path, *_: object) -> None:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("reelforge.worker.encode_mp4", no_space)
    rig.storage.failures = 0
    job_id = rig.create()
    assert rig.run_once()
    job = rig.job(job_id)
    assert (job.status, job.retries) == (Status.QUEUED, 1)
    assert rig.scratch_files() == []


def test_a_jobs_life_is_in_its_events_in_order(rig: Rig) -> None:
    rig.storage.failures = 0
    job_id = rig.create()
    assert rig.run_once()
    events = rig.store.events_after(0, job_id=job_id)
    kinds = [event.kind for event in events]
    assert kinds[:2] == [EventKind.QUEUED, EventKind.STARTED]
    assert kinds[-1] is EventKind.COMPLETED
    assert [event.id for event in events] == sorted(event.id for event in events)


class DroppedAfterCommit(SQLiteJobStore):
    """A store whose first ``finish`` commits, then loses its answer (the connection dropped
    after the commit): the worker sees an error for a change that happened."""

    dropped = False

    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        recorded = super().finish(lease, outcome)
        if not self.dropped:
            self.dropped = True
            raise sqlite3.OperationalError("the connection dropped after the commit")
        return recorded


def test_a_completion_whose_answer_was_lost_keeps_its_video(tmp_path: Path) -> None:
    rig = Rig(tmp_path, failures=0)
    rig.store.close()
    rig.store = DroppedAfterCommit(rig.settings.database_path, clock=rig.clock)
    rig.worker = Worker(rig.settings, rig.store, rig.storage, {"preview": StillEngine()})
    job_id = rig.create()
    assert rig.run_once()
    job = rig.job(job_id)
    assert job.status is Status.COMPLETED
    assert job.video_key is not None
    assert (tmp_path / job.video_key).is_file()
    rig.store.close()


class DeletingStorage(FlakyStorage):
    """Local storage on which the job's owner deletes it while its video is being stored."""

    store: SQLiteJobStore

    def save_video(self, name: str, source: Path) -> str:
        job_id = name.partition("-")[0]
        assert self.store.delete(job_id, owner="k") is not None
        return super().save_video(name, source)


def test_a_video_stored_as_its_job_is_deleted_is_discarded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, failures=0)
    storage = DeletingStorage(tmp_path, failures=0)
    storage.store = rig.store
    rig.worker = Worker(rig.settings, rig.store, storage, {"preview": StillEngine()})
    try:
        job_id = rig.create()
        assert rig.run_once()
        assert rig.store.get(job_id) is None
        assert list((tmp_path / "videos").glob("*.mp4")) == []
    finally:
        rig.store.close()
