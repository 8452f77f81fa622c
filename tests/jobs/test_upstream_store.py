"""The store's part of the gateway engine, on every backend: a hosted job's provider id is
kept across attempts (a restarted worker polls it instead of submitting again), and a job
falls back to another model, queued again, uncharged, its provider id cleared."""

from __future__ import annotations

from reelforge.contract import Status
from reelforge.jobs.model import EventKind, Store
from tests.jobs.contract import FakeClock, claim, create, current


def test_the_provider_id_is_kept_across_attempts(store: Store, clock: FakeClock) -> None:
    job = create(store)
    lease = claim(store, lease_seconds=10)
    assert store.set_upstream(lease, "up-123")
    assert current(store, job.id).upstream_id == "up-123"
    clock.advance(11)  # the worker died: the lease lapses and the job is claimed again
    again = claim(store, worker_id="w2")
    assert (again.job.id, again.job.upstream_id, again.job.attempts) == (job.id, "up-123", 2)
    assert store.release(again)
    assert claim(store, worker_id="w3").job.upstream_id == "up-123"


def test_a_lost_lease_keeps_no_provider_id(store: Store, clock: FakeClock) -> None:
    job = create(store)
    stale = claim(store, lease_seconds=10)
    clock.advance(11)
    claim(store, worker_id="w2")
    assert not store.set_upstream(stale, "late")
    assert current(store, job.id).upstream_id is None


def test_fall_back_hands_the_job_to_another_model(store: Store) -> None:
    job = create(store, max_attempts=1)
    lease = claim(store)
    store.set_upstream(lease, "up-1")
    assert store.fall_back(lease, model="other", reason="fallback: UpstreamFailed: boom")
    moved = current(store, job.id)
    assert (moved.status, moved.model, moved.upstream_id) == (Status.QUEUED, "other", None)
    assert (moved.attempts, moved.lease_token, moved.worker_id) == (0, None, None)
    assert store.claim(worker_id="w2", lease_seconds=30, models=["preview"]) is None
    taken = store.claim(worker_id="w2", lease_seconds=30, models=["other"])
    assert taken is not None
    assert taken.job.id == job.id
    last = [e for e in store.events_after(0, job_id=job.id) if e.kind is EventKind.REQUEUED]
    assert last[-1].data == {"reason": "fallback: UpstreamFailed: boom", "model": "other"}
    assert not store.fall_back(lease, model="other", reason="stale")


def test_fall_back_of_a_cancelled_job_ends_it(store: Store) -> None:
    job = create(store)
    lease = claim(store)
    store.cancel(job.id, owner="key-a")
    assert store.fall_back(lease, model="other", reason="fallback")
    ended = current(store, job.id)
    assert (ended.status, ended.error_name, ended.model) == (Status.ERROR, "Cancelled", "preview")
