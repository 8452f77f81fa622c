"""Progress keeps moving while a video is encoded: the engine's steps take it to 90, the
frames the encoder hands out the rest, and completion sets 100."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reelforge.contract import Status
from reelforge.engines.base import Keyframes, OnStep
from reelforge.jobs.model import Lease, Phase
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.media.encoder import encode_mp4
from reelforge.request import JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Frame, Video
from reelforge.worker import Worker
from tests.conftest import FAST

FRAMES = 24
HANDOVER_SECONDS = 2.0
"""How long the engine's finished frames take to reach the encoder (a long encode)."""


class SlowToEncode:
    """A model-like engine: its steps end at once, its frames then take a while to encode."""

    def load(self) -> None:
        pass

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        for step in range(1, 5):
            on_step(step, 4)
        return Video(64, 64, 25, FRAMES, self._frames(), rendered=True)

    def _frames(self) -> Iterator[Frame]:
        for index in range(FRAMES):
            time.sleep(HANDOVER_SECONDS / FRAMES)
            yield np.full((64, 64, 3), index * 10, np.uint8)


class RecordingStore(SQLiteJobStore):
    """The real SQLite store, noting each heartbeat's progress and phase."""

    beats: list[tuple[int | None, Phase | None]]

    def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: int | None = None,
        phase: Phase | None = None,
    ) -> bool:
        self.beats.append((progress, phase))
        return super().heartbeat(lease, lease_seconds=lease_seconds, progress=progress, phase=phase)


def test_progress_rises_through_the_encoding_to_100(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, x264_preset="ultrafast", lease_seconds=1.5)
    store = RecordingStore(settings.database_path)
    store.beats = []
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
    worker = Worker(settings, store, storage, {"preview": SlowToEncode()})
    job = store.create(owner="k", model="preview", request=JobRequest(prompt="x"), max_attempts=1)
    lease = store.claim(worker_id=worker.worker_id, lease_seconds=settings.lease_seconds)
    assert lease is not None
    worker.process(lease, threading.Event())
    worker.finish_pending()
    encoding = [p for p, phase in store.beats if phase is Phase.ENCODING and p is not None]
    assert len(set(encoding)) >= 3, store.beats  # it moves while encoding ...
    assert encoding == sorted(encoding)
    assert encoding[0] >= 90
    assert encoding[-1] <= 99
    assert encoding[-1] - encoding[0] >= 3  # ... through most of its last tenth
    done = store.get(job.id)
    assert done is not None
    assert (done.status, done.progress) == (Status.COMPLETED, 100)
    store.close()


def test_the_encoder_reports_frames_as_it_hands_them_out(tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    frames = (np.full((64, 64, 3), i * 8, np.uint8) for i in range(30))
    video = Video(64, 64, 25, 30, frames)
    encode_mp4(video, tmp_path / "v.mp4", FAST, lambda done, total: reports.append((done, total)))
    done = [d for d, _ in reports]
    assert done == sorted(done)
    assert len(set(done)) > 5
    assert reports[-1] == (30, 30)
    assert {t for _, t in reports} == {30}
