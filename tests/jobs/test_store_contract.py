"""The contract every ``Store`` backend must pass.

Each test runs once per backend in the ``backend`` fixture's params (``conftest.py``); the
backends and helpers are in ``contract.py``. The event log's contract is ``test_events.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

import pytest

from reelforge.contract import Status
from reelforge.jobs.model import CANCELLED, WORKER_LOST, Job, Phase, Store
from reelforge.request import Dimensions, ImageRef, JobRequest, Resolution
from tests.jobs.contract import (
    REQUEST,
    T0,
    Backend,
    FakeClock,
    claim,
    create,
    current,
)

# --- create and get ---------------------------------------------------------------------


def test_create_then_get_roundtrips(store: Store) -> None:
    job = create(store)
    assert current(store, job.id) == job
    assert (job.status, job.progress, job.attempts, job.max_attempts) == (Status.QUEUED, 0, 0, 3)
    assert (job.owner, job.model, job.request, job.meta) == ("key-a", "preview", REQUEST, {})
    assert job.created_at == job.updated_at == T0
    assert (job.lease_token, job.started_at, job.finished_at, job.video_key) == (None,) * 4
    assert len(job.id) == 32


def test_get_hides_other_owners_jobs(store: Store) -> None:
    job = create(store)
    assert store.get(job.id, owner="key-a") == job
    assert store.get(job.id, owner="key-b") is None
    assert store.get("missing") is None


def test_create_refuses_zero_attempts(store: Store) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        create(store, max_attempts=0)


def test_a_job_is_visible_from_another_store_on_the_same_database(
    backend: Backend, store: Store, clock: FakeClock
) -> None:
    job = create(store)
    store.close()
    other = backend.open(clock)
    try:
        assert other.get(job.id) == job
    finally:
        other.close()


# --- claim ------------------------------------------------------------------------------


def test_claim_is_fifo_by_creation_time_then_id(store: Store, clock: FakeClock) -> None:
    first = create(store)
    clock.advance(1)
    tied = sorted([create(store), create(store)], key=lambda job: job.id)
    claimed = [claim(store).job.id for _ in range(3)]
    assert claimed == [first.id, tied[0].id, tied[1].id]


def test_claim_sets_the_lease(store: Store, clock: FakeClock) -> None:
    job = create(store)
    clock.advance(5)
    lease = claim(store, worker_id="w7", lease_seconds=30)
    assert lease.job_id == job.id
    assert lease.job == current(store, job.id)
    assert lease.job.status is Status.GENERATING
    assert (lease.job.lease_token, lease.job.worker_id) == (lease.token, "w7")
    assert lease.job.lease_expires_at == T0 + 35
    assert lease.job.started_at == lease.job.updated_at == T0 + 5
    assert (lease.job.attempts, lease.job.phase, lease.job.progress) == (1, Phase.PREPARING, 0)


def test_claim_filters_by_model(store: Store) -> None:
    wan = create(store, model="wan")
    ltx = create(store, model="ltx")
    lease = store.claim(worker_id="w1", lease_seconds=30, models={"ltx", "other"})
    assert lease is not None
    assert lease.job.id == ltx.id
    assert store.claim(worker_id="w1", lease_seconds=30, models=["ltx"]) is None
    assert store.claim(worker_id="w1", lease_seconds=30, models=[]) is None
    assert claim(store).job.id == wan.id


def test_claim_returns_none_when_the_queue_is_empty(store: Store) -> None:
    assert store.claim(worker_id="w1", lease_seconds=30) is None
    create(store)
    claim(store)
    assert store.claim(worker_id="w1", lease_seconds=30) is None


# --- heartbeat, complete, fail, release ---------------------------------------------------


def test_heartbeat_extends_the_lease_and_sets_progress(store: Store, clock: FakeClock) -> None:
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


def test_heartbeat_refuses_bad_progress(store: Store) -> None:
    create(store)
    lease = claim(store)
    with pytest.raises(ValueError, match="progress"):
        store.heartbeat(lease, lease_seconds=30, progress=101)
    with pytest.raises(ValueError, match="lease_seconds"):
        store.heartbeat(lease, lease_seconds=0)


def test_complete_finishes_the_job(store: Store, clock: FakeClock) -> None:
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


def test_fail_records_the_error(store: Store, clock: FakeClock) -> None:
    create(store)
    lease = claim(store)
    clock.advance(3)
    assert store.fail(lease, error_name="EngineFailed", error_message="OOM", credits_used=2.0)
    job = current(store, lease.job_id)
    assert (job.status, job.error_name, job.error_message) == (Status.ERROR, "EngineFailed", "OOM")
    assert (job.credits_used, job.finished_at, job.lease_token) == (2.0, T0 + 3, None)
    assert not store.complete(lease, video_key="v.mp4", credits_used=1, meta={})


def test_release_requeues_without_charging_the_attempt(store: Store) -> None:
    job = create(store, max_attempts=1)
    lease = claim(store)
    store.heartbeat(lease, lease_seconds=30, progress=50)
    assert store.release(lease)
    released = current(store, job.id)
    assert (released.status, released.attempts, released.progress) == (Status.QUEUED, 0, 0)
    assert (released.lease_token, released.lease_expires_at, released.worker_id) == (None,) * 3
    assert (released.phase, released.retries) == (None, 0)
    assert not store.release(lease)
    again = claim(store, worker_id="w2")
    assert (again.job.id, again.job.attempts) == (job.id, 1)


# --- lost leases ------------------------------------------------------------------------


def test_a_taken_over_lease_changes_nothing(store: Store, clock: FakeClock) -> None:
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


def test_the_second_workers_complete_wins(store: Store, clock: FakeClock) -> None:
    create(store)
    first = claim(store, worker_id="w1", lease_seconds=10)
    clock.advance(11)
    second = claim(store, worker_id="w2")
    assert store.complete(second, video_key="w2.mp4", credits_used=5, meta={"by": "w2"})
    assert not store.complete(first, video_key="w1.mp4", credits_used=9, meta={"by": "w1"})
    job = current(store, first.job_id)
    assert (job.video_key, job.worker_id, job.meta) == ("w2.mp4", "w2", {"by": "w2"})


def test_an_expired_lease_nobody_settled_is_still_held(store: Store, clock: FakeClock) -> None:
    create(store)
    lease = claim(store, lease_seconds=10)
    clock.advance(60)
    assert store.heartbeat(lease, lease_seconds=10)
    assert store.settle_expired() == 0


def test_expired_leases_requeue_then_error_as_worker_lost(store: Store, clock: FakeClock) -> None:
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


def test_counts_every_status(store: Store) -> None:
    assert store.counts() == dict.fromkeys(Status, 0)
    for _ in range(4):
        create(store)
    store.complete(claim(store), video_key="v.mp4", credits_used=1, meta={})
    store.fail(claim(store), error_name="X", error_message="m", credits_used=1)
    claim(store)
    expected = {Status.QUEUED: 1, Status.GENERATING: 1, Status.COMPLETED: 1, Status.ERROR: 1}
    assert store.counts() == expected


def test_counts_of_one_owner_leave_out_every_other_owners_jobs(store: Store) -> None:
    create(store, owner="key-a")
    create(store, owner="key-a")
    create(store, owner="key-b")
    assert store.counts(owner="key-a")[Status.QUEUED] == 2
    assert store.counts(owner="key-b")[Status.QUEUED] == 1
    assert store.counts(owner="key-c") == dict.fromkeys(Status, 0)
    assert store.counts()[Status.QUEUED] == 3


def test_active_by_model_counts_queued_and_generating_jobs_per_model(
    store: Store, clock: FakeClock
) -> None:
    """What ``/metrics`` shows as queued and running: ended jobs left out, zeros absent."""
    assert store.active_by_model() == {}
    for model in ("preview", "preview", "preview", "other", "other"):
        create(store, model=model)
        clock.advance(1)  # claimed in this order
    store.complete(claim(store), video_key="v.mp4", credits_used=1, meta={})
    claim(store)
    expected = {
        ("preview", Status.QUEUED): 1,
        ("preview", Status.GENERATING): 1,
        ("other", Status.QUEUED): 2,
    }
    assert store.active_by_model() == expected


def test_last_event_id_is_where_new_events_start(store: Store) -> None:
    assert store.last_event_id() == 0
    create(store)
    last = store.last_event_id()
    assert store.events_after(last) == []
    job = create(store)
    assert [event.job_id for event in store.events_after(last)] == [job.id]


# --- the schema refuses impossible rows ---------------------------------------------------

VALID_ROW: dict[str, object] = {
    "id": "raw",
    "owner": "key-a",
    "model": "preview",
    "request": '{"prompt": "raw"}',
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
    "unknown phase": {"status": "generating", "attempts": 1, "phase": "dreaming", **LEASE},
    "queued with a phase": {"phase": "preparing"},
    "negative retries": {"retries": -1},
    "no dialect": {"dialect": None},
}


def test_a_valid_raw_row_is_accepted(backend: Backend, store: Store) -> None:
    backend.insert_raw({**VALID_ROW, "status": "generating", "attempts": 1, **LEASE})
    assert current(store, "raw").status is Status.GENERATING


@pytest.mark.parametrize("change", IMPOSSIBLE_ROWS.values(), ids=IMPOSSIBLE_ROWS.keys())
def test_the_schema_refuses_impossible_rows(
    backend: Backend, store: Store, change: dict[str, object]
) -> None:
    with pytest.raises(backend.integrity_error):
        backend.insert_raw({**VALID_ROW, **change})
    assert store.get("raw") is None


# --- concurrency --------------------------------------------------------------------------

JOBS = 200


def claim_until_empty(store: Store, worker_id: str) -> list[str]:
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


def test_threads_sharing_one_store_claim_each_job_once(store: Store) -> None:
    created = {create(store).id for _ in range(JOBS)}
    claimed = run_threads(lambda worker_id: claim_until_empty(store, worker_id), workers=4)
    assert sorted(claimed) == sorted(created)


def test_threads_with_their_own_stores_claim_each_job_once(
    backend: Backend, store: Store, clock: FakeClock
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


def test_processes_claim_each_job_once(backend: Backend, store: Store) -> None:
    created = {create(store).id for _ in range(JOBS)}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(claim_in_new_store, backend, f"p{n}") for n in range(2)]
        claimed = [job_id for future in futures for job_id in future.result(timeout=120)]
    assert sorted(claimed) == sorted(created)
    assert store.counts()[Status.GENERATING] == JOBS


# --- API keys -----------------------------------------------------------------------------


def test_keys_are_found_by_hash_until_revoked(store: Store, clock: FakeClock) -> None:
    key = store.add_key(name="ci", key_hash="h1", prefix="rf_abc12")
    assert (key.name, key.prefix, key.created_at, key.revoked_at) == ("ci", "rf_abc12", T0, None)
    assert store.key_for_hash("h1") == key
    assert store.key_for_hash("unknown") is None
    assert not store.key_revoked("h1")
    clock.advance(5)
    assert store.revoke_key(key.id)
    assert store.key_for_hash("h1") is None
    assert store.key_revoked("h1")
    assert not store.key_revoked("unknown")
    assert not store.revoke_key(key.id)
    assert store.list_keys() == [
        type(key)(id=key.id, name="ci", created_at=T0, revoked_at=T0 + 5, prefix="rf_abc12")
    ]


def test_keys_are_revoked_by_prefix_and_listed_oldest_first(store: Store, clock: FakeClock) -> None:
    first = store.add_key(name="a", key_hash="h1", prefix="rf_aaaaa")
    clock.advance(1)
    second = store.add_key(name="b", key_hash="h2", prefix="rf_bbbbb")
    assert [key.id for key in store.list_keys()] == [first.id, second.id]
    assert store.revoke_key("rf_bbbbb")
    assert store.key_for_hash("h1") == first
    assert store.key_for_hash("h2") is None
    assert not store.revoke_key("rf_zzzzz")


def test_an_ambiguous_prefix_revokes_nothing(store: Store) -> None:
    store.add_key(name="a", key_hash="h1", prefix="rf_same0")
    store.add_key(name="b", key_hash="h2", prefix="rf_same0")
    with pytest.raises(ValueError, match="2 active keys"):
        store.revoke_key("rf_same0")
    assert all(key.revoked_at is None for key in store.list_keys())


def test_a_key_hash_is_stored_once(backend: Backend, store: Store) -> None:
    store.add_key(name="a", key_hash="h1", prefix="rf_aaaaa")
    with pytest.raises(backend.integrity_error):
        store.add_key(name="b", key_hash="h1", prefix="rf_aaaaa")
    assert len(store.list_keys()) == 1


# --- retention ---------------------------------------------------------------------------


def finish(store: Store, request: JobRequest = REQUEST) -> Job:
    """A job created with ``request`` and completed now."""
    create(store, request=request)
    lease = claim(store)
    assert store.complete(lease, video_key=f"videos/{lease.job.id}.mp4", credits_used=1, meta={})
    return current(store, lease.job.id)


def test_finished_before_lists_ended_unpurged_jobs_oldest_first(
    store: Store, clock: FakeClock
) -> None:
    old = finish(store)
    clock.advance(100)
    newer = finish(store)
    create(store)  # still queued: never listed
    clock.advance(100)
    assert [job.id for job in store.finished_before(clock() - 50, limit=10)] == [old.id, newer.id]
    assert [job.id for job in store.finished_before(clock() - 150, limit=10)] == [old.id]
    assert [job.id for job in store.finished_before(clock(), limit=1)] == [old.id]
    store.mark_purged([old.id])
    assert current(store, old.id).purged_at == clock()
    assert [job.id for job in store.finished_before(clock(), limit=10)] == [newer.id]


def test_inputs_in_use_sees_other_unpurged_jobs_only(store: Store, clock: FakeClock) -> None:
    shared = JobRequest(prompt="p", first_frame=ImageRef("first_frame_image", key="inputs/aaa"))
    both = replace(shared, last_frame=ImageRef("last_image_url", key="inputs/bbb"))
    one, two = finish(store, both), finish(store, shared)
    keys = {"inputs/aaa", "inputs/bbb", "inputs/ccc"}
    assert store.inputs_in_use(keys, excluding=[]) == {"inputs/aaa", "inputs/bbb"}
    assert store.inputs_in_use(keys, excluding=[one.id]) == {"inputs/aaa"}
    store.mark_purged([two.id])
    assert store.inputs_in_use(keys, excluding=[one.id]) == set()


def test_a_chore_has_one_holder_until_it_expires(store: Store, clock: FakeClock) -> None:
    assert store.take_chore("retention", holder="w1", seconds=60)
    assert not store.take_chore("retention", holder="w2", seconds=60)
    assert store.take_chore("retention", holder="w1", seconds=60)  # its own turn, renewed
    assert store.take_chore("other", holder="w2", seconds=60)
    clock.advance(61)
    assert store.take_chore("retention", holder="w2", seconds=60)
    assert not store.take_chore("retention", holder="w1", seconds=60)


# --- cancel ------------------------------------------------------------------------------


def test_the_first_deployment_value_stored_is_the_one_every_store_reads(
    backend: Backend, store: Store, clock: FakeClock
) -> None:
    assert store.deployment_value("storage", "local:aaa") == "local:aaa"
    other = backend.open(clock)
    try:
        assert other.deployment_value("storage", "local:bbb") == "local:aaa"
        assert other.deployment_value("another", "x") == "x"
    finally:
        other.close()
    assert store.deployment_value("storage", "local:ccc") == "local:aaa"


def test_cancelling_a_queued_job_ends_it_at_once(store: Store) -> None:
    job = create(store)
    cancelled = store.cancel(job.id, owner="key-a")
    assert cancelled is not None
    assert (cancelled.status, cancelled.error_name) == (Status.ERROR, "Cancelled")
    assert cancelled.error_message == "cancelled by the client"
    assert store.claim(worker_id="w1", lease_seconds=30) is None


def test_cancelling_a_running_job_stops_its_heartbeats_and_lets_it_fail(store: Store) -> None:
    create(store)
    lease = claim(store)
    marked = store.cancel(lease.job.id, owner="key-a")
    assert marked is not None
    assert marked.status is Status.GENERATING
    assert marked.cancel_requested_at is not None
    assert not store.heartbeat(lease, lease_seconds=30, progress=50)
    assert store.fail(lease, error_name="Cancelled", error_message="cancelled", credits_used=1)
    assert current(store, lease.job.id).status is Status.ERROR


def test_cancel_leaves_ended_jobs_and_other_owners_jobs_alone(store: Store) -> None:
    create(store)
    lease = claim(store)
    assert store.complete(lease, video_key="videos/x.mp4", credits_used=1, meta={})
    assert store.cancel(lease.job.id, owner="key-b") is None
    after = store.cancel(lease.job.id, owner="key-a")
    assert after is not None
    assert (after.status, after.cancel_requested_at) == (Status.COMPLETED, None)


# --- worker readiness --------------------------------------------------------------------


def test_ready_models_are_those_of_workers_seen_lately(store: Store, clock: FakeClock) -> None:
    store.report_worker("w1", models=["preview", "minimax/hailuo-02"])
    clock.advance(10)
    store.report_worker("w2", models=["wan"])
    assert store.ready_models(within=15) == {"preview", "minimax/hailuo-02", "wan"}
    assert store.ready_models(within=5) == {"wan"}
    store.report_worker("w1", models=["preview"])
    assert store.ready_models(within=5) == {"wan", "preview"}


# --- the new record: dialect, callback, adapter, phase ----------------------------------


def test_create_stores_dialect_callback_and_adapter(store: Store) -> None:
    job = store.create(
        owner="key-a",
        model="wan",
        request=REQUEST,
        max_attempts=1,
        dialect="openai",
        callback_url="https://example.com/hook",
        lora="pixel-art",
    )
    assert current(store, job.id) == job
    assert (job.dialect, job.callback_url, job.lora) == (
        "openai",
        "https://example.com/hook",
        "pixel-art",
    )
    assert (job.upstream_id, job.deleted_at, job.phase, job.retries, job.run_after) == (
        None,
    ) * 3 + (0, None)
    assert create(store).dialect == "hailuo"


def test_heartbeat_sets_the_phase_and_ending_clears_it(store: Store) -> None:
    create(store)
    lease = claim(store)
    assert store.heartbeat(lease, lease_seconds=30, phase=Phase.GENERATING, progress=10)
    assert store.heartbeat(lease, lease_seconds=30, progress=20)  # keeps the phase
    job = current(store, lease.job_id)
    assert (job.phase, job.progress) == (Phase.GENERATING, 20)
    assert store.complete(lease, video_key="v.mp4", credits_used=1, meta={})
    assert current(store, lease.job_id).phase is None


def test_an_old_shape_request_reads_back(backend: Backend, store: Store) -> None:
    old = {
        "prompt": "a fox",
        "duration": 10,
        "resolution": "1080P",
        "first_frame": {"url": "https://example.com/a.png", "field": "first_frame_image"},
    }
    backend.insert_raw({**VALID_ROW, "request": json.dumps(old)})
    request = current(store, "raw").request
    assert (request.prompt, request.duration_s, request.size) == ("a fox", 10, Resolution.P1080)
    assert request.first_frame == ImageRef("first_frame_image", url="https://example.com/a.png")
    assert current(store, "raw").dialect == "hailuo"


def test_a_request_roundtrips_with_every_field(store: Store) -> None:
    request = JobRequest(
        prompt="p",
        duration_s=10,
        size=Dimensions(832, 480),
        first_frame=ImageRef("image", key="inputs/a"),
        last_frame=ImageRef("last", url="https://example.com/b.png"),
        fps=16,
        seed=7,
        prompt_optimizer=False,
        options={"negative_prompt": "blur"},
    )
    assert current(store, create(store, request=request).id).request == request


def test_create_refuses_nan(store: Store) -> None:
    with pytest.raises(ValueError, match="JSON"):
        create(store, request=JobRequest(prompt="p", options={"x": float("nan")}))


# --- requeue and cancellation ------------------------------------------------------------


def test_requeue_waits_out_its_delay_without_charging_the_attempt(
    store: Store, clock: FakeClock
) -> None:
    job = create(store, max_attempts=1)
    lease = claim(store)
    assert store.requeue(lease, delay_seconds=30, reason="storage")
    waiting = current(store, job.id)
    assert (waiting.status, waiting.attempts, waiting.retries) == (Status.QUEUED, 0, 1)
    assert (waiting.run_after, waiting.phase, waiting.lease_token) == (T0 + 30, None, None)
    assert not store.requeue(lease, delay_seconds=30, reason="storage")
    clock.advance(29)
    assert store.claim(worker_id="w2", lease_seconds=30) is None
    clock.advance(1)
    again = claim(store, worker_id="w2")
    assert (again.job.id, again.job.attempts, again.job.retries) == (job.id, 1, 1)
    assert store.requeue(again, delay_seconds=0, reason="database")
    assert current(store, job.id).retries == 2


def test_requeue_refuses_a_negative_delay(store: Store) -> None:
    create(store)
    with pytest.raises(ValueError, match="delay_seconds"):
        store.requeue(claim(store), delay_seconds=-1, reason="storage")


def test_a_delayed_job_does_not_hold_up_the_others(store: Store) -> None:
    made = {create(store).id, create(store).id}
    delayed = claim(store)
    assert store.requeue(delayed, delay_seconds=60, reason="storage")
    assert claim(store).job_id == (made - {delayed.job_id}).pop()


def cancel_running(store: Store) -> Job:
    job = create(store)
    claim(store, lease_seconds=10)
    assert store.cancel(job.id, owner="key-a") is not None
    return job


def assert_cancelled(store: Store, job_id: str) -> None:
    job = current(store, job_id)
    assert (job.status, job.error_name, job.error_message) == (
        Status.ERROR,
        CANCELLED,
        "cancelled by the client",
    )
    assert (job.phase, job.lease_token, job.finished_at) == (None, None, T0)
    assert store.claim(worker_id="w2", lease_seconds=10) is None


def test_a_cancelled_job_released_is_not_queued_again(store: Store) -> None:
    job = create(store)
    lease = claim(store)
    store.cancel(job.id, owner="key-a")
    assert store.release(lease)
    assert_cancelled(store, job.id)


def test_a_cancelled_job_requeued_is_not_queued_again(store: Store) -> None:
    job = create(store)
    lease = claim(store)
    store.cancel(job.id, owner="key-a")
    assert store.requeue(lease, delay_seconds=0, reason="storage")
    assert_cancelled(store, job.id)


def test_a_cancelled_job_whose_lease_expired_is_not_queued_again(
    store: Store, clock: FakeClock
) -> None:
    job = create(store)
    claim(store, lease_seconds=10)
    store.cancel(job.id, owner="key-a")
    clock.advance(11)
    assert store.settle_expired() == 1
    job = current(store, job.id)
    assert (job.status, job.error_name, job.finished_at) == (Status.ERROR, CANCELLED, T0 + 11)


# --- listing and deletion ----------------------------------------------------------------


def test_list_pages_an_owners_jobs_newest_first(store: Store, clock: FakeClock) -> None:
    made = []
    for _ in range(5):
        made.append(create(store).id)
        clock.advance(1)
    create(store, owner="key-b")
    newest_first = made[::-1]
    assert [job.id for job in store.list(owner="key-a", limit=2)] == newest_first[:2]
    page = store.list(owner="key-a", limit=2, after=newest_first[1])
    assert [job.id for job in page] == newest_first[2:4]
    assert [job.id for job in store.list(owner="key-a", limit=9, after=made[0])] == []
    assert len(store.list(owner="key-b", limit=9)) == 1
    assert store.list(owner="key-b", limit=9, after=made[2]) == []  # another owner's cursor


def test_list_breaks_ties_by_id(store: Store) -> None:
    made = sorted(create(store).id for _ in range(3))
    assert [job.id for job in store.list(owner="key-a", limit=9)] == made[::-1]
    assert [job.id for job in store.list(owner="key-a", limit=9, after=made[2])] == made[1::-1]


def test_a_deleted_job_is_hidden(backend: Backend, store: Store) -> None:
    kept, deleted = create(store), create(store)
    backend.set_column(deleted.id, "deleted_at", T0)
    assert store.get(deleted.id) is None
    assert store.get(deleted.id, owner="key-a") is None
    assert store.cancel(deleted.id, owner="key-a") is None
    assert [job.id for job in store.list(owner="key-a", limit=9)] == [kept.id]


def test_list_in_ascending_order_pages_oldest_first(store: Store, clock: FakeClock) -> None:
    made = []
    for _ in range(4):
        made.append(create(store).id)
        clock.advance(1)
    assert [job.id for job in store.list(owner="key-a", limit=2, order="asc")] == made[:2]
    page = store.list(owner="key-a", limit=9, after=made[1], order="asc")
    assert [job.id for job in page] == made[2:]
    with pytest.raises(ValueError, match="order"):
        store.list(owner="key-a", limit=2, order="sideways")  # type: ignore[arg-type]


def test_delete_hides_the_job_and_keeps_its_place_as_a_cursor(
    store: Store, clock: FakeClock
) -> None:
    made = []
    for _ in range(3):
        made.append(create(store).id)
        clock.advance(1)
    clock.advance(5)
    deleted = store.delete(made[1], owner="key-a")
    assert deleted is not None
    assert (deleted.id, deleted.deleted_at, deleted.updated_at) == (made[1], clock(), clock())
    assert store.get(made[1], owner="key-a") is None
    assert store.get(made[1]) is None
    assert [job.id for job in store.list(owner="key-a", limit=9)] == [made[2], made[0]]
    assert [job.id for job in store.list(owner="key-a", limit=9, after=made[1])] == [made[0]]
    assert store.delete(made[1], owner="key-a") is None  # deleted already
    assert store.cancel(made[1], owner="key-a") is None


def test_delete_cancels_a_queued_job_first(store: Store) -> None:
    job = create(store)
    deleted = store.delete(job.id, owner="key-a")
    assert deleted is not None
    assert (deleted.status, deleted.error_name) == (Status.ERROR, CANCELLED)
    assert store.claim(worker_id="w1", lease_seconds=30) is None


def test_delete_asks_a_running_job_to_stop(store: Store) -> None:
    create(store)
    lease = claim(store)
    deleted = store.delete(lease.job_id, owner="key-a")
    assert deleted is not None
    assert (deleted.status, deleted.cancel_requested_at) == (Status.GENERATING, T0)
    assert not store.heartbeat(lease, lease_seconds=30)
    assert store.release(lease)  # its worker gives it back: it ends Cancelled, still hidden
    assert store.get(lease.job_id) is None
    assert store.claim(worker_id="w2", lease_seconds=30) is None


def test_delete_leaves_other_owners_jobs_alone(store: Store) -> None:
    job = create(store)
    assert store.delete(job.id, owner="key-b") is None
    assert store.delete("missing", owner="key-a") is None
    assert current(store, job.id).status is Status.QUEUED


def test_inputs_of_a_deleted_job_are_not_in_use(store: Store) -> None:
    shared = JobRequest(prompt="p", first_frame=ImageRef("first_frame_image", key="inputs/aaa"))
    kept, gone = create(store, request=shared), create(store, request=shared)
    assert store.inputs_in_use({"inputs/aaa"}, excluding=[kept.id]) == {"inputs/aaa"}
    assert store.delete(gone.id, owner="key-a") is not None
    assert store.inputs_in_use({"inputs/aaa"}, excluding=[kept.id]) == set()
