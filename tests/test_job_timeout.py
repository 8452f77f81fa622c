"""A job running past its model's ``job_timeout_seconds`` ends in ``error`` (``TimedOut``),
recorded through the store and its event log, and frees the worker; a step that never calls
back is ended from the heartbeat and the process is asked to recycle itself."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reelforge.contract import Status
from reelforge.engines.base import Keyframes, OnStep
from reelforge.engines.registry import load_registry
from reelforge.jobs.model import EventKind, Job
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest
from reelforge.runtime import EXIT_STUCK, build_workers
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Frame, Video
from reelforge.worker import Worker
from tests.still_engine import StillEngine

STEP_S = 0.1


class SlowEngine:
    """Twenty steps of ``STEP_S`` each, every one reported: 2 s in all."""

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        frames = []
        for index in range(20):
            time.sleep(STEP_S)
            on_step(index + 1, 20)
            frames.append(np.full((64, 64, 3), 90, np.uint8))
        return Video(width=64, height=64, fps=25, frame_count=20, frames=iter(frames))


class StuckEngine:
    """A step that never calls back until the test lets it go (``release``)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        self.release.wait(30)
        frames: list[Frame] = [np.full((64, 64, 3), 40, np.uint8)] * 4
        return Video(width=64, height=64, fps=25, frame_count=4, frames=iter(frames))


class Rig:
    def __init__(self, tmp_path: Path, engine: object, limit: float) -> None:
        self.settings = Settings(data_dir=tmp_path, x264_preset="ultrafast", lease_seconds=0.6)
        self.store = SQLiteJobStore(self.settings.database_path)
        self.storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
        self.stuck = threading.Event()
        self.worker = Worker(
            self.settings,
            self.store,
            self.storage,
            {"slow": engine, "preview": StillEngine()},  # type: ignore[dict-item]
            job_timeouts={"slow": limit},
            on_stuck=self.stuck.set,
        )

    def run(self, model: str) -> Job:
        """Create a job of ``model``, claim and process it; the job as it ended."""
        job_id = self.store.create(
            owner="k", model=model, request=JobRequest(prompt="x"), max_attempts=2
        ).id
        lease = self.store.claim(worker_id=self.worker.worker_id, lease_seconds=5)
        assert lease is not None
        self.worker.process(lease, threading.Event())
        self.worker.finish_pending()
        return self.job(job_id)

    def job(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None
        return job


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, SlowEngine(), limit=0.35)
    yield rig
    rig.store.close()


def test_a_job_past_its_limit_ends_timed_out_and_the_worker_goes_on(slow: Rig) -> None:
    started = time.perf_counter()
    job = slow.run("slow")
    assert time.perf_counter() - started < 1.5, "the job was not stopped at its limit"
    assert (job.status, job.error_name) == (Status.ERROR, "TimedOut")
    assert job.error_message is not None
    assert "limit of 0.35 s" in job.error_message
    events = slow.store.events_after(0, job_id=job.id)
    assert events[-1].kind is EventKind.ERROR
    assert not slow.stuck.is_set(), "a step that called back must not recycle the process"
    assert slow.run("preview").status is Status.COMPLETED  # the default limit: generous
    assert list(slow.storage.scratch.iterdir()) == []


def test_a_step_that_never_calls_back_is_ended_from_outside(tmp_path: Path) -> None:
    engine = StuckEngine()
    rig = Rig(tmp_path, engine, limit=0.3)
    runner = threading.Thread(target=rig.run, args=("slow",))
    runner.start()
    try:
        assert rig.stuck.wait(5), "the stuck job did not ask for a new process"
        (job,) = rig.store.list(owner="k", limit=10)
        assert (job.status, job.error_name) == (Status.ERROR, "TimedOut")
        assert job.error_message is not None
        assert "did not stop" in job.error_message
        engine.release.set()
        runner.join(30)
        after = rig.job(job.id)
        assert (after.status, after.video_key) == (Status.ERROR, None)
        assert list((tmp_path / "videos").iterdir()) == [], "a late video must be discarded"
    finally:
        engine.release.set()
        rig.store.close()


def test_the_limit_is_the_models_else_the_settings(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[models.quick]\nengine = "preview"\njob_timeout_seconds = 90\n'
        '[models.plain]\nengine = "preview"\n'
    )
    settings = Settings(data_dir=tmp_path, models=registry, job_timeout_seconds=600)
    assert load_registry(registry)["quick"].job_timeout_seconds == 90
    store = SQLiteJobStore(settings.database_path)
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
    (worker,) = build_workers(settings, store, storage, prefix="t")
    assert worker.job_timeouts == {"quick": 90, "plain": 600}
    store.close()


def test_a_worker_process_with_a_stuck_step_exits_for_a_fresh_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = SQLiteJobStore(settings.database_path)
    job_id = store.create(
        owner="k", model="preview", request=JobRequest(prompt="x"), max_attempts=2
    ).id
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        REELFORGE_DATA_DIR=str(tmp_path),
        REELFORGE_JOB_TIMEOUT_SECONDS="0.5",
        REELFORGE_LEASE_SECONDS="1",
        REELFORGE_DRAIN_SECONDS="0.5",
        REELFORGE_POLL_SECONDS="0.05",
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.stuck_worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == EXIT_STUCK, done.stderr
        assert "did not return after its time limit: draining" in done.stderr
        job = store.get(job_id)
        assert job is not None
        assert (job.status, job.error_name) == (Status.ERROR, "TimedOut")
    finally:
        store.close()
