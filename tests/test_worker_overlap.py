"""The worker encodes a model's finished frames on its finisher thread, so the model starts
the next job while the previous one is still being encoded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reelforge.contract import Status
from reelforge.engines.base import Keyframes, OnStep
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Frame, Video
from reelforge.worker import Worker

ENCODE_SECONDS = 0.6


class SlowToEncode:
    """An engine whose output is 'rendered' but takes ENCODE_SECONDS to hand to the encoder
    (standing in for a large clip's encode); it logs when each generate and encode run."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    def load(self) -> None:
        pass

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        self.events.append(("generate", time.monotonic()))
        on_step(1, 1)
        return Video(32, 32, 25, 10, self._frames(), rendered=True)

    def _frames(self) -> Iterator[Frame]:
        for index in range(10):
            time.sleep(ENCODE_SECONDS / 10)
            yield np.full((32, 32, 3), index * 20, np.uint8)
        self.events.append(("encoded", time.monotonic()))


def test_the_next_generation_starts_while_the_last_video_is_encoded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, x264_preset="ultrafast")
    store = SQLiteJobStore(settings.database_path)
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
    engine = SlowToEncode()
    worker = Worker(settings, store, storage, {"preview": engine})
    request = JobRequest(prompt="x")
    ids = [
        store.create(owner="k", model="preview", request=request, max_attempts=1).id for _ in "ab"
    ]
    for _ in ids:
        lease = store.claim(worker_id=worker.worker_id, lease_seconds=30)
        assert lease is not None
        worker.process(lease, threading.Event())
    worker.finish_pending()
    kinds = [kind for kind, _ in engine.events]
    assert kinds == ["generate", "generate", "encoded", "encoded"]
    first_encoded = engine.events[2][1]
    second_generate = engine.events[1][1]
    assert second_generate < first_encoded - ENCODE_SECONDS / 2
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None
        assert job.status is Status.COMPLETED
    store.close()
