"""Crashes, drains and restarts of a real service, and the lease token behind them.

Worker processes are killed with SIGKILL or drained with SIGTERM mid-job, and the API is
restarted under load; every accepted generation must still end exactly once. The last
tests show, through the real ``Worker`` on the real SQLite store, that the lease token is
what keeps a worker that lost its lease from recording a result.

Every wait is bounded. A preview clip takes about 1.5 s of work at 6 s and 2.5 s at 10 s;
the 10 s one is used where a signal must land while the job is being rendered.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import av
import httpx
import pytest

from reelforge.contract import Status
from reelforge.jobs.model import WORKER_LOST, Completed, Job, Lease, Outcome
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest
from reelforge.storage.local import LocalStorage
from reelforge.worker import Worker
from tests.service import LEGACY, TEST_KEY, Api, running_api, running_workers, service_settings
from tests.still_engine import StillEngine

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float) -> T:
    """Poll ``check`` every 20 ms until it returns something; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def submit(api: Api, duration: int = 6) -> str:
    body = {"model": "preview", "prompt": "A lighthouse at dusk [Pan right]", "duration": duration}
    response = api.create(body)
    assert response.status_code == 200, response.text
    generation_id: str = response.json()["generation_id"]
    return generation_id


def row(api: Api, job_id: str) -> Job:
    job = api.store.get(job_id)
    assert job is not None
    return job


def rendering(api: Api, job_id: str, attempt: int) -> Job:
    """The job once its ``attempt``-th claim is rendering frames (progress above 0)."""

    def check() -> Job | None:
        job = row(api, job_id)
        busy = job.status is Status.GENERATING and job.progress > 0 and job.attempts == attempt
        return job if busy else None

    return wait_for(check, f"rendering of attempt {attempt}", timeout=30)


def signal_holder(worker: BaseProcess, job: Job, signum: int) -> None:
    """Send ``signum`` to ``worker``, which must hold ``job``'s lease, and wait for its exit."""
    assert worker.pid is not None
    assert job.worker_id is not None
    assert job.worker_id.split(":")[1] == str(worker.pid)
    os.kill(worker.pid, signum)
    worker.join(20)
    assert not worker.is_alive()


def videos(data_dir: Path) -> list[str]:
    """Names of the files in the data dir's ``videos`` folder."""
    return sorted(path.name for path in (data_dir / "videos").iterdir())


def assert_playable(path: Path, size: tuple[int, int], frame_count: int) -> None:
    """``path`` is an H.264 yuv420p MP4 of ``size`` whose ``frame_count`` frames all decode."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert (context.name, str(context.pix_fmt)) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == size
        assert sum(1 for _ in container.decode(stream)) == frame_count


# --- killed workers ----------------------------------------------------------------------


def test_a_killed_workers_job_completes_once_after_its_lease_expires(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, lease_seconds=1.5)
    with running_api(settings) as api:
        job_id = submit(api, duration=10)
        with running_workers(settings) as [first]:
            signal_holder(first, rendering(api, job_id, attempt=1), signal.SIGKILL)
        assert first.exitcode == -signal.SIGKILL
        assert row(api, job_id).status is Status.GENERATING  # the lost lease awaits a claim
        with running_workers(settings) as [second]:
            done = api.wait(job_id, timeout=30)
        job = row(api, job_id)
    assert done["status"] == "completed", done
    assert (job.status, job.attempts) == (Status.COMPLETED, 2)
    assert job.worker_id is not None
    assert job.worker_id.split(":")[1] == str(second.pid)
    assert job.video_key is not None
    assert videos(tmp_path) == [Path(job.video_key).name]
    assert_playable(tmp_path / job.video_key, (1366, 768), 250)


def test_a_job_whose_workers_keep_dying_ends_in_worker_lost(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, lease_seconds=1.5, max_attempts=2)
    with running_api(settings) as api:
        job_id = submit(api, duration=10)
        for attempt in (1, 2):
            with running_workers(settings) as [worker]:
                signal_holder(worker, rendering(api, job_id, attempt), signal.SIGKILL)
        with running_workers(settings):  # its first claim settles the expired lease
            done = api.wait(job_id, timeout=30)
        job = row(api, job_id)
    assert done["status"] == "error", done
    assert done["error"] == {
        "name": WORKER_LOST,
        "message": "the worker stopped responding 2 times",
    }
    assert (job.attempts, job.video_key) == (2, None)
    assert videos(tmp_path) == []


# --- draining workers --------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, drain_seconds=10.0)
    with running_api(settings) as api:
        running, waiting = submit(api, duration=10), submit(api)
        with running_workers(settings) as [worker]:
            signal_holder(worker, rendering(api, running, attempt=1), signal.SIGTERM)
        assert worker.exitcode == 0
        assert api.get(running)["status"] == "completed"
        left = row(api, waiting)
        assert (left.status, left.attempts, left.worker_id) == (Status.QUEUED, 0, None)
        with running_workers(settings):
            assert api.wait(waiting, timeout=30)["status"] == "completed"


def test_sigterm_without_drain_time_gives_the_job_back_uncharged(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, drain_seconds=0.0)
    with running_api(settings) as api:
        job_id = submit(api, duration=10)
        with running_workers(settings) as [worker]:
            signal_holder(worker, rendering(api, job_id, attempt=1), signal.SIGTERM)
        assert worker.exitcode == 0
        released = row(api, job_id)
        assert (released.status, released.attempts, released.progress) == (Status.QUEUED, 0, 0)
        assert (released.worker_id, released.lease_token) == (None, None)
        assert videos(tmp_path) == []
        assert list((tmp_path / "tmp").iterdir()) == []  # the partial video was removed
        with running_workers(settings):
            assert api.wait(job_id, timeout=30)["status"] == "completed"
        assert row(api, job_id).attempts == 1


# --- restarting the API ------------------------------------------------------------------


class Submitter(threading.Thread):
    """Creates generations one after another until stopped, noting each outcome in order:
    ``("accepted", id)`` for a 200, ``("refused", error)`` when the connection failed,
    ``("answered", status)`` for any other answer."""

    def __init__(self, base_url: str, interval: float, limit: int) -> None:
        super().__init__(name="submitter", daemon=True)
        self.base_url, self.interval, self.limit = base_url, interval, limit
        self.stop = threading.Event()
        self.outcomes: list[tuple[str, str]] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=5) as client:
            while not self.stop.is_set() and len(self.outcomes) < self.limit:
                self.outcomes.append(self._create(client, len(self.outcomes)))
                self.stop.wait(self.interval)

    def _create(self, client: httpx.Client, index: int) -> tuple[str, str]:
        try:
            response = client.post(LEGACY, json={"model": "preview", "prompt": f"Clip {index}"})
        except httpx.TransportError as exc:
            return ("refused", type(exc).__name__)
        if response.status_code != 200:
            return ("answered", str(response.status_code))
        return ("accepted", str(response.json()["generation_id"]))

    def await_count(self, kind: str, at_least: int) -> None:
        """Wait (at most 10 s) until ``at_least`` outcomes are of ``kind``."""

        def reached() -> bool | None:
            return sum(outcome == kind for outcome, _ in list(self.outcomes)) >= at_least or None

        wait_for(reached, f"{at_least} {kind} creates", timeout=10)


def test_every_create_answered_200_across_an_api_restart_completes(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    submitter = Submitter(f"http://127.0.0.1:{settings.port}", interval=0.1, limit=60)
    with running_workers(settings, 2):
        with running_api(settings):
            submitter.start()
            submitter.await_count("accepted", 4)
        submitter.await_count("refused", 1)  # the API is down
        with running_api(settings) as api:  # the same port, the same data dir
            submitter.await_count("accepted", 9)
            submitter.stop.set()
            submitter.join(10)
            accepted = [value for kind, value in submitter.outcomes if kind == "accepted"]
            final = {job_id: api.wait(job_id, timeout=60)["status"] for job_id in accepted}
    letters = {"accepted": "A", "refused": "R", "answered": "?"}
    shape = "".join(letters[kind] for kind, _ in submitter.outcomes)
    assert re.fullmatch("A+R+A+", shape), submitter.outcomes  # up, down, up again
    assert len(accepted) >= 9
    assert final == dict.fromkeys(accepted, "completed")


# --- the lease token: a worker that lost its lease records nothing -----------------------

LEASE = 30.0
SECRET = b"s" * 32
REQUEST = JobRequest(prompt="A lighthouse")


class Clock:
    """The store's injected clock: epoch seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class RecordingStore(SQLiteJobStore):
    """The real SQLite store, noting which worker tried to complete and what it answered."""

    def __init__(self, path: Path, clock: Clock) -> None:
        super().__init__(path, clock=clock)
        self.completions: list[tuple[str | None, bool]] = []

    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        accepted = super().finish(lease, outcome)
        if isinstance(outcome, Completed):
            self.completions.append((lease.job.worker_id, accepted))
        return accepted


class StallingStorage(LocalStorage):
    """Worker A's storage: it runs ``stall`` before keeping A's video, which stands for A
    pausing (GC, swapped out, SIGSTOP) between rendering and recording its result. The
    heartbeat has stopped by then, so only ``store.complete`` can notice the lost lease."""

    def __init__(self, root: Path, stall: Callable[[], None]) -> None:
        super().__init__(root, secret=SECRET, url_ttl_seconds=60)
        self._stall = stall

    def save_video(self, name: str, source: Path) -> str:
        self._stall()
        return super().save_video(name, source)


@dataclass(frozen=True)
class Takeover:
    """What is left after worker A reported a job that worker B had taken over."""

    completions: list[tuple[str | None, bool]]
    """``(worker, accepted)`` for each ``store.complete`` call, in order."""
    job: Job
    videos: list[str]
    a_video: str
    b_video: str


def take_over(data_dir: Path, *, b_finishes_first: bool) -> Takeover:
    """Worker A claims and renders a job; before A records it, A's lease expires and worker
    B claims the job (and, if ``b_finishes_first``, completes it); then A, a real ``Worker``
    in its ``process``, reaches ``store.complete`` with its stale lease."""
    clock = Clock()
    settings = service_settings(data_dir, lease_seconds=LEASE)
    store = RecordingStore(settings.database_path, clock)
    engines = {"preview": StillEngine()}
    storage = LocalStorage(data_dir, secret=SECRET, url_ttl_seconds=60)
    worker_b = Worker(settings, store, storage, engines, worker_id="B")
    leases: dict[str, Lease] = {}

    def lose_the_lease() -> None:
        clock.now += LEASE + 1
        lease_b = store.claim(worker_id="B", lease_seconds=LEASE)
        assert lease_b is not None
        assert lease_b.job.attempts == 2  # the claim settled A's expired lease first
        leases["B"] = lease_b
        if b_finishes_first:
            worker_b.process(lease_b, threading.Event())

    worker_a = Worker(
        settings, store, StallingStorage(data_dir, lose_the_lease), engines, worker_id="A"
    )
    created = store.create(owner="test", model="preview", request=REQUEST, max_attempts=3)
    lease_a = store.claim(worker_id="A", lease_seconds=LEASE)
    assert lease_a is not None
    leases["A"] = lease_a
    worker_a.process(lease_a, threading.Event())
    job = store.get(created.id)
    store.close()
    assert job is not None
    a_video, b_video = (f"{job.id}-{leases[w].token[:12]}.mp4" for w in ("A", "B"))
    return Takeover(store.completions, job, videos(data_dir), a_video, b_video)


def test_a_worker_that_lost_its_lease_cannot_complete_a_job_taken_over(tmp_path: Path) -> None:
    after = take_over(tmp_path, b_finishes_first=True)
    assert after.completions == [("B", True), ("A", False)]
    assert (after.job.status, after.job.attempts) == (Status.COMPLETED, 2)
    assert after.job.video_key == f"videos/{after.b_video}"
    assert after.videos == [after.b_video]  # A discarded its video


def test_a_stale_completion_is_refused_while_the_new_holder_works(tmp_path: Path) -> None:
    after = take_over(tmp_path, b_finishes_first=False)
    assert after.completions == [("A", False)]
    assert (after.job.status, after.job.worker_id) == (Status.GENERATING, "B")
    assert after.job.video_key is None
    assert after.videos == []


# The counterfactuals: the same scenarios with the lease condition of every leased UPDATE
# (complete, fail, release, heartbeat) loosened. They show that the refusals above come
# from that condition and not from anything else in the worker or the store.

TOKEN = "lease_token = :token AND "
LEASE_CONDITION = " AND lease_token = :token AND status = 'generating'"


def loosen(monkeypatch: pytest.MonkeyPatch, condition: str) -> None:
    """Make ``SQLiteJobStore`` drop ``condition`` from its leased UPDATEs (every statement
    that acts on a lease runs through ``_update_leased``, the terminal ones included)."""
    original = SQLiteJobStore._update_leased

    def update_leased(
        self: SQLiteJobStore,
        conn: sqlite3.Connection,
        sql: str,
        lease: Lease,
        params: Mapping[str, Any],
    ) -> list[sqlite3.Row]:
        assert condition in sql, "the store's SQL changed: this counterfactual proves nothing"
        return original(self, conn, sql.replace(condition, " "), lease, params)

    monkeypatch.setattr(SQLiteJobStore, "_update_leased", update_leased)


def test_without_the_token_a_stale_worker_overrides_the_new_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loosen(monkeypatch, TOKEN)
    after = take_over(tmp_path, b_finishes_first=False)
    assert after.completions == [("A", True)]  # accepted: only the token refused it
    assert after.job.status is Status.COMPLETED
    assert after.job.video_key == f"videos/{after.a_video}"  # while B still renders it


def test_without_the_token_the_status_still_refuses_a_completion_after_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loosen(monkeypatch, TOKEN)
    after = take_over(tmp_path, b_finishes_first=True)
    assert after.completions == [("B", True), ("A", False)]  # `status = 'generating'` did
    assert after.job.video_key == f"videos/{after.b_video}"


def test_without_any_lease_condition_a_job_completes_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loosen(monkeypatch, LEASE_CONDITION)
    after = take_over(tmp_path, b_finishes_first=True)
    assert after.completions == [("B", True), ("A", True)]
    assert after.job.video_key == f"videos/{after.a_video}"  # A overwrote B's result
    assert after.videos == sorted([after.a_video, after.b_video])  # B's is orphaned
