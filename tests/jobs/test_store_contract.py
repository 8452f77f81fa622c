"""The contract every ``JobStore`` backend must pass.

Each test runs once per backend in the ``backend`` fixture's params. A backend opens any
number of stores on one database (to test durability and concurrency across instances)
and can write a raw row past the store (to test the schema's constraints). To add a
backend, add a param and a class with ``open``, ``insert_raw`` and ``integrity_error``.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar, Protocol

import psycopg
import pytest
from psycopg import sql

from reelforge.contract import Status
from reelforge.jobs import sqlite as sqlite_store
from reelforge.jobs.model import WORKER_LOST, Job, JobStore, Lease
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SCHEMA_VERSION, SQLiteJobStore
from tests.postgres import throwaway_schema

Clock = Callable[[], float]
T0 = 1_700_000_000.0
REQUEST: dict[str, Any] = {"prompt": "a fox in snow", "duration": 6, "extra": [1, None, "é"]}


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend(Protocol):
    integrity_error: ClassVar[type[Exception]]

    def open(self, clock: Clock) -> JobStore: ...

    def insert_raw(self, row: dict[str, object]) -> None: ...


@dataclass(frozen=True)
class SQLiteBackend:
    path: Path
    integrity_error: ClassVar[type[Exception]] = sqlite3.IntegrityError

    def open(self, clock: Clock) -> JobStore:
        return SQLiteJobStore(self.path, clock=clock)

    def insert_raw(self, row: dict[str, object]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(row.values()))
        finally:
            conn.close()


@dataclass(frozen=True)
class PostgresBackend:
    url: str
    """A URL whose ``search_path`` is a throwaway schema holding the store's tables."""
    integrity_error: ClassVar[type[Exception]] = psycopg.IntegrityError

    def open(self, clock: Clock) -> JobStore:
        return PostgresJobStore(self.url, clock=clock)

    def insert_raw(self, row: dict[str, object]) -> None:
        query = sql.SQL("INSERT INTO jobs ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, tuple(row.values()))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "jobs.db")
        return
    with throwaway_schema() as url:
        yield PostgresBackend(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: Backend, clock: FakeClock) -> Iterator[JobStore]:
    opened = backend.open(clock)
    yield opened
    opened.close()


def create(store: JobStore, *, model: str = "preview", max_attempts: int = 3) -> Job:
    return store.create(owner="key-a", model=model, request=REQUEST, max_attempts=max_attempts)


def claim(store: JobStore, worker_id: str = "w1", lease_seconds: float = 30) -> Lease:
    lease = store.claim(worker_id=worker_id, lease_seconds=lease_seconds)
    assert lease is not None
    return lease


def current(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job


# --- create and get ---------------------------------------------------------------------


def test_create_then_get_roundtrips(store: JobStore) -> None:
    job = create(store)
    assert current(store, job.id) == job
    assert (job.status, job.progress, job.attempts, job.max_attempts) == (Status.QUEUED, 0, 0, 3)
    assert (job.owner, job.model, job.request, job.meta) == ("key-a", "preview", REQUEST, {})
    assert job.created_at == job.updated_at == T0
    assert (job.lease_token, job.started_at, job.finished_at, job.video_key) == (None,) * 4
    assert len(job.id) == 32


def test_get_hides_other_owners_jobs(store: JobStore) -> None:
    job = create(store)
    assert store.get(job.id, owner="key-a") == job
    assert store.get(job.id, owner="key-b") is None
    assert store.get("missing") is None


def test_create_refuses_zero_attempts(store: JobStore) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        create(store, max_attempts=0)


def test_a_job_is_visible_from_another_store_on_the_same_database(
    backend: Backend, store: JobStore, clock: FakeClock
) -> None:
    job = create(store)
    store.close()
    other = backend.open(clock)
    try:
        assert other.get(job.id) == job
    finally:
        other.close()


# --- claim ------------------------------------------------------------------------------


def test_claim_is_fifo_by_creation_time_then_id(store: JobStore, clock: FakeClock) -> None:
    first = create(store)
    clock.advance(1)
    tied = sorted([create(store), create(store)], key=lambda job: job.id)
    claimed = [claim(store).job.id for _ in range(3)]
    assert claimed == [first.id, tied[0].id, tied[1].id]


def test_claim_sets_the_lease(store: JobStore, clock: FakeClock) -> None:
    job = create(store)
    clock.advance(5)
    lease = claim(store, worker_id="w7", lease_seconds=30)
    assert lease.job_id == job.id
    assert lease.job == current(store, job.id)
    assert lease.job.status is Status.GENERATING
    assert (lease.job.lease_token, lease.job.worker_id) == (lease.token, "w7")
    assert lease.job.lease_expires_at == T0 + 35
    assert lease.job.started_at == lease.job.updated_at == T0 + 5
    assert lease.job.attempts == 1


def test_claim_filters_by_model(store: JobStore) -> None:
    wan = create(store, model="wan")
    ltx = create(store, model="ltx")
    lease = store.claim(worker_id="w1", lease_seconds=30, models={"ltx", "other"})
    assert lease is not None
    assert lease.job.id == ltx.id
    assert store.claim(worker_id="w1", lease_seconds=30, models=["ltx"]) is None
    assert store.claim(worker_id="w1", lease_seconds=30, models=[]) is None
    assert claim(store).job.id == wan.id


def test_claim_returns_none_when_the_queue_is_empty(store: JobStore) -> None:
    assert store.claim(worker_id="w1", lease_seconds=30) is None
    create(store)
    claim(store)
    assert store.claim(worker_id="w1", lease_seconds=30) is None


# --- heartbeat, complete, fail, release ---------------------------------------------------


def test_heartbeat_extends_the_lease_and_sets_progress(store: JobStore, clock: FakeClock) -> None:
    create(store)
    lease = claim(store, lease_seconds=30)
    clock.advance(20)
    assert store.heartbeat(lease, lease_seconds=30, progress=40)
    assert current(store, lease.job_id).lease_expires_at == T0 + 50
    clock.advance(20)  # past the first expiry, within the extended one
    assert store.settle_expired() == 0
    assert store.heartbeat(lease, lease_seconds=30)
    job = current(store, lease.job_id)
    assert (job.status, job.progress, job.lease_expires_at) == (Status.GENERATING, 40, T0 + 70)


def test_heartbeat_refuses_bad_progress(store: JobStore) -> None:
    create(store)
    lease = claim(store)
    with pytest.raises(ValueError, match="progress"):
        store.heartbeat(lease, lease_seconds=30, progress=101)
    with pytest.raises(ValueError, match="lease_seconds"):
        store.heartbeat(lease, lease_seconds=0)


def test_complete_finishes_the_job(store: JobStore, clock: FakeClock) -> None:
    create(store)
    lease = claim(store)
    store.heartbeat(lease, lease_seconds=30, progress=70)
    clock.advance(12)
    meta = {"fps": 24, "size": [1366, 768]}
    assert store.complete(lease, video_key="v/abc.mp4", credits_used=11.5, meta=meta)
    job = current(store, lease.job_id)
    assert (job.status, job.progress, job.video_key) == (Status.COMPLETED, 100, "v/abc.mp4")
    assert (job.credits_used, job.meta, job.finished_at) == (11.5, meta, T0 + 12)
    assert (job.lease_token, job.lease_expires_at) == (None, None)
    assert job.worker_id == "w1"
    assert not store.heartbeat(lease, lease_seconds=30)
    assert not store.fail(lease, error_name="X", error_message="late", credits_used=0)


def test_fail_records_the_error(store: JobStore, clock: FakeClock) -> None:
    create(store)
    lease = claim(store)
    clock.advance(3)
    assert store.fail(lease, error_name="EngineFailed", error_message="OOM", credits_used=2.0)
    job = current(store, lease.job_id)
    assert (job.status, job.error_name, job.error_message) == (Status.ERROR, "EngineFailed", "OOM")
    assert (job.credits_used, job.finished_at, job.lease_token) == (2.0, T0 + 3, None)
    assert not store.complete(lease, video_key="v.mp4", credits_used=1, meta={})


def test_release_requeues_without_charging_the_attempt(store: JobStore) -> None:
    job = create(store, max_attempts=1)
    lease = claim(store)
    store.heartbeat(lease, lease_seconds=30, progress=50)
    assert store.release(lease)
    released = current(store, job.id)
    assert (released.status, released.attempts, released.progress) == (Status.QUEUED, 0, 0)
    assert (released.lease_token, released.lease_expires_at, released.worker_id) == (None,) * 3
    assert not store.release(lease)
    again = claim(store, worker_id="w2")
    assert (again.job.id, again.job.attempts) == (job.id, 1)


# --- lost leases ------------------------------------------------------------------------


def test_a_taken_over_lease_changes_nothing(store: JobStore, clock: FakeClock) -> None:
    create(store)
    stale = claim(store, worker_id="w1", lease_seconds=10)
    clock.advance(11)
    fresh = claim(store, worker_id="w2")  # settles w1's expired lease, then re-claims
    assert fresh.job_id == stale.job_id
    assert fresh.job.attempts == 2
    before = current(store, fresh.job_id)
    assert not store.heartbeat(stale, lease_seconds=30, progress=90)
    assert not store.complete(stale, video_key="stale.mp4", credits_used=1, meta={})
    assert not store.fail(stale, error_name="X", error_message="stale", credits_used=1)
    assert not store.release(stale)
    assert current(store, fresh.job_id) == before


def test_the_second_workers_complete_wins(store: JobStore, clock: FakeClock) -> None:
    create(store)
    first = claim(store, worker_id="w1", lease_seconds=10)
    clock.advance(11)
    second = claim(store, worker_id="w2")
    assert store.complete(second, video_key="w2.mp4", credits_used=5, meta={"by": "w2"})
    assert not store.complete(first, video_key="w1.mp4", credits_used=9, meta={"by": "w1"})
    job = current(store, first.job_id)
    assert (job.video_key, job.worker_id, job.meta) == ("w2.mp4", "w2", {"by": "w2"})


def test_an_expired_lease_nobody_settled_is_still_held(store: JobStore, clock: FakeClock) -> None:
    create(store)
    lease = claim(store, lease_seconds=10)
    clock.advance(60)
    assert store.heartbeat(lease, lease_seconds=10)
    assert store.settle_expired() == 0


def test_expired_leases_requeue_then_error_as_worker_lost(
    store: JobStore, clock: FakeClock
) -> None:
    job = create(store, max_attempts=2)
    claim(store, lease_seconds=10)
    clock.advance(10)
    assert store.settle_expired() == 0  # expiry is strict: at the deadline it still holds
    clock.advance(1)
    assert store.settle_expired() == 1
    requeued = current(store, job.id)
    assert (requeued.status, requeued.attempts, requeued.progress) == (Status.QUEUED, 1, 0)
    assert (requeued.lease_token, requeued.worker_id) == (None, None)
    claim(store, worker_id="w2", lease_seconds=10)
    clock.advance(11)
    assert store.settle_expired() == 1
    lost = current(store, job.id)
    assert (lost.status, lost.error_name, lost.attempts) == (Status.ERROR, WORKER_LOST, 2)
    assert lost.error_message is not None
    assert "2 times" in lost.error_message
    assert (lost.finished_at, lost.lease_token) == (clock.now, None)
    assert store.claim(worker_id="w3", lease_seconds=10) is None


def test_counts_every_status(store: JobStore) -> None:
    assert store.counts() == dict.fromkeys(Status, 0)
    for _ in range(4):
        create(store)
    store.complete(claim(store), video_key="v.mp4", credits_used=1, meta={})
    store.fail(claim(store), error_name="X", error_message="m", credits_used=1)
    claim(store)
    expected = {Status.QUEUED: 1, Status.GENERATING: 1, Status.COMPLETED: 1, Status.ERROR: 1}
    assert store.counts() == expected


# --- the schema refuses impossible rows ---------------------------------------------------

VALID_ROW: dict[str, object] = {
    "id": "raw",
    "owner": "key-a",
    "model": "preview",
    "request": "{}",
    "status": "queued",
    "progress": 0,
    "attempts": 0,
    "max_attempts": 1,
    "meta": "{}",
    "created_at": T0,
    "updated_at": T0,
}
LEASE = {"lease_token": "t", "lease_expires_at": T0 + 30}
IMPOSSIBLE_ROWS: dict[str, dict[str, object]] = {
    "unknown status": {"status": "paused"},
    "progress 101": {"progress": 101},
    "negative progress": {"progress": -1},
    "attempts above max": {
        "status": "error",
        "attempts": 2,
        "error_name": "X",
        "error_message": "m",
        "finished_at": T0,
    },
    "negative attempts": {"attempts": -1},
    "queued with no attempt left": {"attempts": 1},
    "generating without lease": {"status": "generating", "attempts": 1},
    "generating without expiry": {"status": "generating", "attempts": 1, "lease_token": "t"},
    "queued with lease": {**LEASE},
    "completed without video": {"status": "completed", "progress": 100, "finished_at": T0},
    "completed at 99": {
        "status": "completed",
        "progress": 99,
        "video_key": "v",
        "finished_at": T0,
    },
    "completed with lease": {
        "status": "completed",
        "progress": 100,
        "video_key": "v",
        "finished_at": T0,
        **LEASE,
    },
    "error without name": {"status": "error", "error_message": "m", "finished_at": T0},
    "error without message": {"status": "error", "error_name": "X", "finished_at": T0},
    "queued but finished": {"finished_at": T0},
    "completed not finished": {"status": "completed", "progress": 100, "video_key": "v"},
}


def test_a_valid_raw_row_is_accepted(backend: Backend, store: JobStore) -> None:
    backend.insert_raw({**VALID_ROW, "status": "generating", "attempts": 1, **LEASE})
    assert current(store, "raw").status is Status.GENERATING


@pytest.mark.parametrize("change", IMPOSSIBLE_ROWS.values(), ids=IMPOSSIBLE_ROWS.keys())
def test_the_schema_refuses_impossible_rows(
    backend: Backend, store: JobStore, change: dict[str, object]
) -> None:
    with pytest.raises(backend.integrity_error):
        backend.insert_raw({**VALID_ROW, **change})
    assert store.get("raw") is None


# --- concurrency --------------------------------------------------------------------------

JOBS = 200


def claim_until_empty(store: JobStore, worker_id: str) -> list[str]:
    claimed: list[str] = []
    while (lease := store.claim(worker_id=worker_id, lease_seconds=600)) is not None:
        claimed.append(lease.job_id)
    return claimed


def claim_in_new_store(backend: Backend, worker_id: str) -> list[str]:
    """Run in a child process: open a store of its own there and drain the queue."""
    opened = backend.open(time.time)
    try:
        return claim_until_empty(opened, worker_id)
    finally:
        opened.close()


def run_threads(work: Callable[[str], list[str]], workers: int) -> list[str]:
    results: dict[str, list[str]] = {}

    def run(worker_id: str) -> None:
        results[worker_id] = work(worker_id)

    threads = [threading.Thread(target=run, args=(f"w{n}",)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == workers, "a worker thread raised"
    return [job_id for claimed in results.values() for job_id in claimed]


def test_threads_sharing_one_store_claim_each_job_once(store: JobStore) -> None:
    created = {create(store).id for _ in range(JOBS)}
    claimed = run_threads(lambda worker_id: claim_until_empty(store, worker_id), workers=4)
    assert sorted(claimed) == sorted(created)


def test_threads_with_their_own_stores_claim_each_job_once(
    backend: Backend, store: JobStore, clock: FakeClock
) -> None:
    created = {create(store).id for _ in range(JOBS)}
    stores = [backend.open(clock) for _ in range(4)]
    try:
        by_worker = dict(zip([f"w{n}" for n in range(4)], stores, strict=True))
        claimed = run_threads(lambda w: claim_until_empty(by_worker[w], w), workers=4)
    finally:
        for opened in stores:
            opened.close()
    assert sorted(claimed) == sorted(created)


def test_processes_claim_each_job_once(backend: Backend, store: JobStore) -> None:
    created = {create(store).id for _ in range(JOBS)}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(claim_in_new_store, backend, f"p{n}") for n in range(2)]
        claimed = [job_id for future in futures for job_id in future.result(timeout=120)]
    assert sorted(claimed) == sorted(created)
    assert store.counts()[Status.GENERATING] == JOBS


# --- API keys -----------------------------------------------------------------------------


def test_keys_are_found_by_hash_until_revoked(store: JobStore, clock: FakeClock) -> None:
    key = store.add_key(name="ci", key_hash="h1", prefix="rf_abc12")
    assert (key.name, key.prefix, key.created_at, key.revoked_at) == ("ci", "rf_abc12", T0, None)
    assert store.key_for_hash("h1") == key
    assert store.key_for_hash("unknown") is None
    clock.advance(5)
    assert store.revoke_key(key.id)
    assert store.key_for_hash("h1") is None
    assert not store.revoke_key(key.id)
    assert store.list_keys() == [
        type(key)(id=key.id, name="ci", created_at=T0, revoked_at=T0 + 5, prefix="rf_abc12")
    ]


def test_keys_are_revoked_by_prefix_and_listed_oldest_first(
    store: JobStore, clock: FakeClock
) -> None:
    first = store.add_key(name="a", key_hash="h1", prefix="rf_aaaaa")
    clock.advance(1)
    second = store.add_key(name="b", key_hash="h2", prefix="rf_bbbbb")
    assert [key.id for key in store.list_keys()] == [first.id, second.id]
    assert store.revoke_key("rf_bbbbb")
    assert store.key_for_hash("h1") == first
    assert store.key_for_hash("h2") is None
    assert not store.revoke_key("rf_zzzzz")


def test_an_ambiguous_prefix_revokes_nothing(store: JobStore) -> None:
    store.add_key(name="a", key_hash="h1", prefix="rf_same0")
    store.add_key(name="b", key_hash="h2", prefix="rf_same0")
    with pytest.raises(ValueError, match="2 active keys"):
        store.revoke_key("rf_same0")
    assert all(key.revoked_at is None for key in store.list_keys())


def test_a_key_hash_is_stored_once(backend: Backend, store: JobStore) -> None:
    store.add_key(name="a", key_hash="h1", prefix="rf_aaaaa")
    with pytest.raises(backend.integrity_error):
        store.add_key(name="b", key_hash="h1", prefix="rf_aaaaa")
    assert len(store.list_keys()) == 1


# --- SQLite only ------------------------------------------------------------------------


def test_sqlite_refuses_an_old_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(RuntimeError, match=r"SQLite 3\.34\.1 is too old"):
        SQLiteJobStore(tmp_path / "jobs.db")


def test_sqlite_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    SQLiteJobStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(RuntimeError, match=rf"schema versions \[{SCHEMA_VERSION + 1}\]"):
        SQLiteJobStore(path)


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    SQLiteJobStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_sqlite_writers_of_other_processes_wait_their_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes take turns through ``<database>.turn``: a writer waits while another process
    holds it, goes on the moment it is free, and gives up after ``busy_timeout``."""
    path = tmp_path / "jobs.db"
    store = SQLiteJobStore(path)
    other = open(f"{path}.turn", "a+b")  # another process's turn, as flock sees it  # noqa: SIM115
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        released = threading.Timer(0.3, fcntl.flock, (other, fcntl.LOCK_UN))
        released.start()
        started = time.monotonic()
        store.create(owner="k", model="preview", request={"prompt": "x"}, max_attempts=1)
        assert time.monotonic() - started >= 0.25
        released.join()
        fcntl.flock(other, fcntl.LOCK_EX)
        monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 200)
        with pytest.raises(sqlite3.OperationalError, match="kept its write turn"):
            store.create(owner="k", model="preview", request={"prompt": "x"}, max_attempts=1)
        assert store.counts()[Status.QUEUED] == 1  # the refused create left nothing
    finally:
        other.close()
        store.close()


def _open_at(path: Path, at: float) -> str:
    """Open a store on ``path`` at wall-clock time ``at``: "opened" or the error."""
    time.sleep(max(0.0, at - time.time()))
    try:
        SQLiteJobStore(path).close()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    return "opened"


def test_sqlite_stores_opened_at_once_on_a_new_file_all_open(tmp_path: Path) -> None:
    """``reelforge worker --processes N`` on a fresh data directory: every process creates
    and converts the same new database at the same moment (SQLite refuses the losers of the
    switch to WAL at once, without waiting; unhandled, 1 round in 10 failed here)."""
    with ProcessPoolExecutor(6, mp_context=get_context("spawn")) as pool:
        for started in [pool.submit(time.sleep, 0.3) for _ in range(6)]:
            started.result()  # six processes up before the first round
        for attempt in range(30):
            path, at = tmp_path / f"jobs-{attempt}.db", time.time() + 0.1
            outcomes = [pool.submit(_open_at, path, at) for _ in range(6)]
            assert [outcome.result() for outcome in outcomes] == ["opened"] * 6, attempt


def test_sqlite_store_refuses_use_after_fork(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    opened = SQLiteJobStore(tmp_path / "jobs.db")
    monkeypatch.setattr("os.getpid", lambda: -1)
    with pytest.raises(RuntimeError, match="another process"):
        opened.counts()
    opened.close()


# --- retention ---------------------------------------------------------------------------


def finish(store: JobStore, clock: FakeClock, request: dict[str, Any]) -> Job:
    """A job created with ``request`` and completed now."""
    store.create(owner="key-a", model="preview", request=request, max_attempts=3)
    lease = claim(store)
    assert store.complete(lease, video_key=f"videos/{lease.job.id}.mp4", credits_used=1, meta={})
    return current(store, lease.job.id)


def test_finished_before_lists_ended_unpurged_jobs_oldest_first(
    store: JobStore, clock: FakeClock
) -> None:
    old = finish(store, clock, REQUEST)
    clock.advance(100)
    newer = finish(store, clock, REQUEST)
    create(store)  # still queued: never listed
    clock.advance(100)
    assert [job.id for job in store.finished_before(clock() - 50, limit=10)] == [old.id, newer.id]
    assert [job.id for job in store.finished_before(clock() - 150, limit=10)] == [old.id]
    assert [job.id for job in store.finished_before(clock(), limit=1)] == [old.id]
    store.mark_purged([old.id])
    assert current(store, old.id).purged_at == clock()
    assert [job.id for job in store.finished_before(clock(), limit=10)] == [newer.id]


def test_inputs_in_use_sees_other_unpurged_jobs_only(store: JobStore, clock: FakeClock) -> None:
    shared = {**REQUEST, "first_frame": {"key": "inputs/aaa", "field": "first_frame_image"}}
    both = {**shared, "last_frame": {"key": "inputs/bbb", "field": "last_image_url"}}
    one, two = finish(store, clock, both), finish(store, clock, shared)
    keys = {"inputs/aaa", "inputs/bbb", "inputs/ccc"}
    assert store.inputs_in_use(keys, excluding=[]) == {"inputs/aaa", "inputs/bbb"}
    assert store.inputs_in_use(keys, excluding=[one.id]) == {"inputs/aaa"}
    store.mark_purged([two.id])
    assert store.inputs_in_use(keys, excluding=[one.id]) == set()


def test_a_chore_has_one_holder_until_it_expires(store: JobStore, clock: FakeClock) -> None:
    assert store.take_chore("retention", holder="w1", seconds=60)
    assert not store.take_chore("retention", holder="w2", seconds=60)
    assert store.take_chore("retention", holder="w1", seconds=60)  # its own turn, renewed
    assert store.take_chore("other", holder="w2", seconds=60)
    clock.advance(61)
    assert store.take_chore("retention", holder="w2", seconds=60)
    assert not store.take_chore("retention", holder="w1", seconds=60)


def test_sqlite_upgrades_a_first_version_database(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_store._SCHEMA:  # the schema as version 1 shipped it
        conn.execute(statement)
    conn.close()
    SQLiteJobStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert "purged_at" in columns
    finally:
        conn.close()


# --- cancel ------------------------------------------------------------------------------


def test_cancelling_a_queued_job_ends_it_at_once(store: JobStore) -> None:
    job = create(store)
    cancelled = store.cancel(job.id, owner="key-a")
    assert cancelled is not None
    assert (cancelled.status, cancelled.error_name) == (Status.ERROR, "Cancelled")
    assert cancelled.error_message == "cancelled by the client"
    assert store.claim(worker_id="w1", lease_seconds=30) is None


def test_cancelling_a_running_job_stops_its_heartbeats_and_lets_it_fail(store: JobStore) -> None:
    create(store)
    lease = claim(store)
    marked = store.cancel(lease.job.id, owner="key-a")
    assert marked is not None
    assert marked.status is Status.GENERATING
    assert marked.cancel_requested_at is not None
    assert not store.heartbeat(lease, lease_seconds=30, progress=50)
    assert store.fail(lease, error_name="Cancelled", error_message="cancelled", credits_used=1)
    assert current(store, lease.job.id).status is Status.ERROR


def test_cancel_leaves_ended_jobs_and_other_owners_jobs_alone(store: JobStore) -> None:
    create(store)
    lease = claim(store)
    assert store.complete(lease, video_key="videos/x.mp4", credits_used=1, meta={})
    assert store.cancel(lease.job.id, owner="key-b") is None
    after = store.cancel(lease.job.id, owner="key-a")
    assert after is not None
    assert (after.status, after.cancel_requested_at) == (Status.COMPLETED, None)


# --- worker readiness --------------------------------------------------------------------


def test_ready_models_are_those_of_workers_seen_lately(store: JobStore, clock: FakeClock) -> None:
    store.report_worker("w1", models=["preview", "minimax/hailuo-02"])
    clock.advance(10)
    store.report_worker("w2", models=["wan"])
    assert store.ready_models(seen_since=clock() - 15) == {"preview", "minimax/hailuo-02", "wan"}
    assert store.ready_models(seen_since=clock() - 5) == {"wan"}
    store.report_worker("w1", models=["preview"])
    assert store.ready_models(seen_since=clock() - 5) == {"wan", "preview"}
