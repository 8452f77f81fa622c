from __future__ import annotations

from pathlib import Path

from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import ImageRef, JobRequest
from reelforge.retention import Retention
from reelforge.storage.local import LocalStorage

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def finished_job(store: SQLiteJobStore, storage: LocalStorage, inputs: list[bytes]) -> str:
    """A completed job with its video and input images in storage; returns its id."""
    refs = [ImageRef(field="first_frame_image", key=storage.save_input(data)) for data in inputs]
    request = JobRequest(
        prompt="x",
        first_frame=refs[0] if refs else None,
        last_frame=refs[1] if len(refs) > 1 else None,
    )
    store.create(owner="k", model="preview", request=request, max_attempts=1)
    lease = store.claim(worker_id="w", lease_seconds=30)
    assert lease is not None
    video = storage.scratch / "v.mp4"
    video.write_bytes(b"mp4")
    key = storage.save_video(lease.job.id, video)
    assert store.complete(lease, video_key=key, credits_used=1.0, meta={})
    return lease.job.id


def test_old_videos_and_unshared_inputs_go_shared_and_recent_ones_stay(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteJobStore(tmp_path / "db.sqlite3", clock=clock)
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60, clock=clock)
    old = finished_job(store, storage, [b"shared image", b"old only"])
    clock.now += 5 * DAY
    recent = finished_job(store, storage, [b"shared image"])
    clock.now += 2 * DAY
    orphan = tmp_path / "videos" / f"{old}-0badc0ffee00.mp4"  # left by a killed attempt
    orphan.write_bytes(b"mp4")
    retention = Retention(store, storage, days=3, holder="w1", clock=clock)

    assert retention.maybe_sweep() == 1
    assert not orphan.exists()

    def exists(key: str | None) -> bool:
        assert key is not None
        return (tmp_path / key).exists()

    old_job, recent_job = store.get(old), store.get(recent)
    assert old_job is not None
    assert recent_job is not None
    assert old_job.purged_at == clock.now
    assert not exists(old_job.video_key)
    first, last = old_job.request.first_frame, old_job.request.last_frame
    assert first is not None
    assert last is not None
    assert not exists(last.key)  # only the old job used it
    assert exists(first.key)  # the recent job still uses it
    assert recent_job.purged_at is None
    assert exists(recent_job.video_key)
    assert retention.maybe_sweep() == 0  # not due again yet
    store.close()


def test_only_one_worker_sweeps_at_a_time(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteJobStore(tmp_path / "db.sqlite3", clock=clock)
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60, clock=clock)
    keep = 100 / DAY  # 100 seconds
    first = Retention(store, storage, days=keep, holder="w1", clock=clock)
    second = Retention(store, storage, days=keep, holder="w2", clock=clock)
    finished_job(store, storage, [])
    clock.now += 200
    assert first.maybe_sweep() == 1  # w1 now holds the chore for its interval
    finished_job(store, storage, [])
    clock.now += 200
    assert second.maybe_sweep() == 0
    clock.now += first.every_seconds
    assert second.maybe_sweep() == 1
    store.close()
