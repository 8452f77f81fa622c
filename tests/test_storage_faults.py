"""The local videos directory becomes unwritable while a job runs (replaced by a file: a
failure that holds for root too, where a chmod would not): the job is queued again with
backoff, ends ``StorageFailed`` (never ``WorkerLost``) if the failure persists, completes if
it heals, and no finished MP4 is left in ``tmp/`` after any failed try."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import av

from reelforge.contract import Status
from reelforge.engines.base import Keyframes, OnStep
from reelforge.jobs.model import STORAGE_FAILED, EventKind, Job
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Video
from reelforge.worker import Worker
from tests.still_engine import StillEngine

T0 = 1_700_000_000.0
RETRY_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class BreakingEngine(StillEngine):
    """A still engine that, while it generates, replaces ``videos/`` with a plain file."""

    def __init__(self, videos: Path) -> None:
        self.videos = videos
        self.broken = True

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        if self.broken and self.videos.is_dir():
            shutil.rmtree(self.videos)
            self.videos.write_text("the disk went read-only")
        return super().generate(request, keyframes, on_step)

    def heal(self) -> None:
        self.broken = False
        self.videos.unlink()
        self.videos.mkdir()


class Rig:
    def __init__(self, tmp_path: Path, *, retries: int) -> None:
        self.clock = Clock()
        settings = Settings(
            data_dir=tmp_path,
            x264_preset="ultrafast",
            storage_retries=retries,
            storage_retry_seconds=RETRY_S,
        )
        self.store = SQLiteJobStore(settings.database_path, clock=self.clock)
        self.storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
        self.engine = BreakingEngine(tmp_path / "videos")
        self.worker = Worker(settings, self.store, self.storage, {"preview": self.engine})
        self.job_id = self.store.create(
            owner="k", model="preview", request=JobRequest(prompt="x"), max_attempts=2
        ).id

    def run_once(self) -> Job:
        lease = self.store.claim(worker_id=self.worker.worker_id, lease_seconds=30)
        assert lease is not None
        self.worker.process(lease, threading.Event())
        self.worker.finish_pending()
        assert list(self.storage.scratch.iterdir()) == [], "a finished MP4 was left in tmp/"
        job = self.store.get(self.job_id)
        assert job is not None
        return job


def test_an_unwritable_videos_directory_ends_in_storage_failed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, retries=2)
    first = rig.run_once()
    assert (first.status, first.retries, first.run_after) == (Status.QUEUED, 1, T0 + RETRY_S)
    rig.clock.now += RETRY_S
    second = rig.run_once()
    assert (second.status, second.run_after) == (Status.QUEUED, T0 + RETRY_S + 2 * RETRY_S)
    rig.clock.now += 2 * RETRY_S
    last = rig.run_once()
    assert (last.status, last.error_name, last.attempts) == (Status.ERROR, STORAGE_FAILED, 1)
    assert last.error_message is not None
    assert "after 3 tries" in last.error_message
    assert "Not a directory" in last.error_message
    kinds = [event.kind for event in rig.store.events_after(0, job_id=rig.job_id)]
    assert kinds.count(EventKind.REQUEUED) == 2
    assert kinds[-1] is EventKind.ERROR
    rig.store.close()


def test_the_job_completes_once_the_directory_is_back(tmp_path: Path) -> None:
    rig = Rig(tmp_path, retries=2)
    assert rig.run_once().status is Status.QUEUED
    rig.engine.heal()
    rig.clock.now += RETRY_S
    done = rig.run_once()
    assert (done.status, done.retries) == (Status.COMPLETED, 1)
    assert done.video_key is not None
    assert (tmp_path / done.video_key).stat().st_mode & 0o777 == 0o600
    with av.open(str(tmp_path / done.video_key)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    rig.store.close()
