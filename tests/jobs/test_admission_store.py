"""The job store's part of admission, on every backend: usage counted in the create's
transaction, idempotency keys, per-key limits and the claim's max-running rule."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from reelforge.api.admission import Gate
from reelforge.errors import RateLimited
from reelforge.jobs.admission import Admission, Usage
from reelforge.jobs.model import KeyLimits, Store
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SQLiteJobStore
from tests.jobs.contract import (
    REQUEST,
    Backend,
    FakeClock,
    PostgresBackend,
    SQLiteBackend,
    claim,
    create,
)

SIX = replace(REQUEST, duration_s=6)
TEN = replace(REQUEST, duration_s=10)


def usage_of(store: Store, owner: str = "key-a") -> Usage:
    """The usage a create of ``owner`` sees (the probe's job is then created too)."""
    seen: list[Usage] = []
    store.create(
        owner=owner,
        model="preview",
        request=REQUEST,
        max_attempts=3,
        admission=Admission(check=seen.append),
    )
    return seen[0]


def test_usage_counts_the_minute_the_queue_and_the_day(store: Store, clock: FakeClock) -> None:
    create(store, request=SIX)
    clock.advance(30)
    create(store, request=TEN)
    create(store, owner="key-b")
    usage = usage_of(store)
    assert usage.now == clock.now
    assert (usage.created_last_minute, usage.oldest_last_minute) == (2, clock.now - 30)
    assert (usage.queued, usage.queued_video_seconds) == (2, 16)
    assert usage.started_video_seconds_today == 0
    assert usage.queued_everywhere == 3  # key-b's included, not the probe's own
    clock.advance(31)
    assert usage_of(store).created_last_minute == 2  # the probe of before and the TEN job


def test_video_seconds_count_when_a_job_starts_not_before_and_deleting_keeps_them(
    store: Store, clock: FakeClock
) -> None:
    started = create(store, request=SIX)
    clock.advance(1)
    cancelled = create(store, request=TEN)
    claim(store)  # the SIX job, first in line
    store.cancel(cancelled.id, owner="key-a")
    assert usage_of(store).started_video_seconds_today == 6
    store.delete(started.id, owner="key-a")
    usage = usage_of(store)
    assert usage.started_video_seconds_today == 6
    assert usage.queued_video_seconds == 6  # the first probe (REQUEST asks for 6 s)
    clock.advance(6400)  # T0 + 1 is 22:13:21 UTC: this is past the next midnight
    assert usage_of(store).started_video_seconds_today == 0


def test_a_check_that_raises_refuses_the_create(store: Store) -> None:
    gate = Gate("key-a", KeyLimits(rpm=1))
    store.create(
        owner="key-a",
        model="preview",
        request=REQUEST,
        max_attempts=3,
        admission=gate.admission(6),
    )
    with pytest.raises(RateLimited) as refused:
        store.create(
            owner="key-a",
            model="preview",
            request=REQUEST,
            max_attempts=3,
            admission=gate.admission(6),
        )
    assert refused.value.retry_after == 60
    assert store.counts()["queued"] == 1  # type: ignore[index]


def test_an_idempotency_key_is_held_bound_then_forgotten_after_a_day(
    store: Store, clock: FakeClock
) -> None:
    assert store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f1") is None
    pending = store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f2")
    assert pending is not None
    assert (pending.fingerprint, pending.job) == ("f1", None)
    assert store.reserve_idempotency(owner="key-b", key="k1", fingerprint="f1") is None
    job = store.create(
        owner="key-a",
        model="preview",
        request=REQUEST,
        max_attempts=3,
        admission=Admission(idempotency_key="k1"),
    )
    store.delete(job.id, owner="key-a")
    held = store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f1")
    assert held is not None
    assert held.job is not None
    assert held.job.id == job.id
    clock.advance(86400)
    assert store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f3") is None


def test_an_abandoned_or_stale_pending_key_is_free_again(store: Store, clock: FakeClock) -> None:
    store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f1")
    store.abandon_idempotency(owner="key-a", key="k1")
    assert store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f2") is None
    clock.advance(299)
    assert store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f2") is not None
    clock.advance(1)  # its request's process died 300 s ago: the key is taken over
    assert store.reserve_idempotency(owner="key-a", key="k1", fingerprint="f2") is None


def test_pruning_drops_idempotency_keys_older_than_a_day(
    store: Store, clock: FakeClock, backend: Backend
) -> None:
    store.reserve_idempotency(owner="key-a", key="old", fingerprint="f")
    clock.advance(86400)
    store.reserve_idempotency(owner="key-a", key="new", fingerprint="f")
    store.prune_events()
    other = backend.open(FakeClock(clock.now - 86400))  # a clock that would still honour "old"
    try:
        assert other.reserve_idempotency(owner="key-a", key="old", fingerprint="g") is None
        assert other.reserve_idempotency(owner="key-a", key="new", fingerprint="g") is not None
    finally:
        other.close()


def test_key_limits_are_stored_and_updated_one_at_a_time(store: Store) -> None:
    key = store.add_key(name="a", key_hash="h" * 64, prefix="rf_aaaaa", limits=KeyLimits(rpm=5))
    assert key.limits == KeyLimits(rpm=5)
    updated = store.set_key_limits("rf_aaaaa", KeyLimits(max_running=2))
    assert updated is not None
    assert updated.limits == KeyLimits(rpm=5, max_running=2)
    assert store.key_for_hash("h" * 64) == updated
    assert store.set_key_limits("nope", KeyLimits(rpm=1)) is None


def test_the_claim_skips_a_key_at_its_max_running(store: Store, clock: FakeClock) -> None:
    key = store.add_key(name="a", key_hash="h" * 64, prefix="rf_aaaaa", limits=KeyLimits())
    store.set_key_limits(key.id, KeyLimits(max_running=1))
    first = create(store, owner=key.id)
    clock.advance(1)
    second = create(store, owner=key.id)
    clock.advance(1)
    other = create(store, owner="key-b")
    lease = claim(store)
    assert lease.job_id == first.id
    assert claim(store).job_id == other.id  # ``second`` waits: its key runs one already
    assert store.claim(worker_id="w1", lease_seconds=30) is None
    store.complete(lease, video_key="v.mp4", credits_used=1.0, meta={})
    assert claim(store).job_id == second.id


def test_limits_hold_across_stores_creating_at_once(backend: Backend, clock: FakeClock) -> None:
    stores = [backend.open(clock) for _ in range(2)]
    gate = Gate("key-a", KeyLimits(rpm=5))
    outcomes: list[str] = []

    def send(store: Store) -> None:
        for _ in range(6):
            try:
                store.create(
                    owner="key-a",
                    model="preview",
                    request=REQUEST,
                    max_attempts=3,
                    admission=gate.admission(6),
                )
                outcomes.append("created")
            except RateLimited:
                outcomes.append("refused")
            except Exception as exc:  # noqa: BLE001 (shown by the assertion below)
                outcomes.append(repr(exc))

    threads = [threading.Thread(target=send, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(outcomes) == ["created"] * 5 + ["refused"] * 7
        assert len(stores[0].list(owner="key-a", limit=100)) == 5
    finally:
        for store in stores:
            store.close()


def test_one_of_two_stores_reserving_a_key_at_once_gets_it(
    backend: Backend, clock: FakeClock
) -> None:
    stores = [backend.open(clock) for _ in range(4)]
    start = threading.Barrier(len(stores))
    got: list[object] = []

    def reserve(store: Store) -> None:
        start.wait()
        got.append(store.reserve_idempotency(owner="key-a", key="k", fingerprint="f"))

    threads = [threading.Thread(target=reserve, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert len(got) == 4
        assert got.count(None) == 1
    finally:
        for store in stores:
            store.close()


def test_the_default_max_running_applies_to_keys_without_their_own(
    backend: Backend, clock: FakeClock
) -> None:
    if isinstance(backend, SQLiteBackend):
        store: Store = SQLiteJobStore(backend.path, clock=clock, key_max_running=1)
    else:
        assert isinstance(backend, PostgresBackend)
        store = PostgresJobStore(backend.url, clock=clock, key_max_running=1)
    try:
        own = store.add_key(
            name="b", key_hash="b" * 64, prefix="rf_bbbbb", limits=KeyLimits(max_running=2)
        )
        for owner in ("key-a", "key-a", own.id, own.id, own.id):
            create(store, owner=owner)
            clock.advance(1)
        claimed = [claim(store).job.owner for _ in range(3)]
        assert claimed == ["key-a", own.id, own.id]
        assert store.claim(worker_id="w1", lease_seconds=30) is None
    finally:
        store.close()
