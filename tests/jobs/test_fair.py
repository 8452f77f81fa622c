"""Fair claims across keys, key priority, and the queue outlook (position and pace), on every
store backend (the ``store`` fixture's params)."""

from __future__ import annotations

import pytest

from reelforge.jobs.model import PACE_WEIGHT, Completed, KeyLimits, Priority, Store
from tests.jobs.contract import T0, FakeClock, claim, create

DONE = Completed(video_key="v.mp4", credits_used=0.0, meta={})


def _run_one(store: Store, clock: FakeClock, seconds: float = 1.0) -> str:
    """Claim the next job, run it for ``seconds`` and complete it; its owner."""
    lease = claim(store)
    clock.advance(seconds)
    assert store.finish(lease, DONE)
    return lease.job.owner


def test_a_key_with_one_job_is_served_within_two_claims_of_a_busy_key(
    store: Store, clock: FakeClock
) -> None:
    for _ in range(50):
        create(store, owner="key-a")
        clock.advance(0.01)
    create(store, owner="key-b")
    served = [_run_one(store, clock) for _ in range(2)]
    assert "key-b" in served


def test_keys_take_turns_oldest_job_first_within_a_key(store: Store, clock: FakeClock) -> None:
    a_jobs = [create(store, owner="key-a") for _ in range(3)]
    clock.advance(1)
    b_jobs = [create(store, owner="key-b") for _ in range(2)]
    claimed = []
    for _ in range(5):
        lease = claim(store)
        claimed.append(lease.job.id)
        clock.advance(1)
        assert store.finish(lease, DONE)
    a_ids = sorted(a_jobs, key=lambda job: (job.created_at, job.id))
    b_ids = [job.id for job in b_jobs]
    assert claimed[0::2] == [job.id for job in a_ids]
    assert sorted(claimed[1::2]) == sorted(b_ids)


def test_the_key_with_fewer_running_jobs_goes_first(store: Store, clock: FakeClock) -> None:
    for _ in range(3):
        create(store, owner="key-a")
    clock.advance(1)
    create(store, owner="key-b")
    first = claim(store)  # key-a's oldest; it keeps running
    second = claim(store)
    assert (first.job.owner, second.job.owner) == ("key-a", "key-b")


def test_priority_orders_keys_before_turns(store: Store, clock: FakeClock) -> None:
    keys = {
        level: store.add_key(
            name=level.value, key_hash=level.value, prefix=level.value[:8], priority=level
        )
        for level in Priority
    }
    for level in (Priority.LOW, Priority.NORMAL, Priority.HIGH):
        for _ in range(2):
            create(store, owner=keys[level].id)
            clock.advance(1)
    served = [_run_one(store, clock) for _ in range(6)]
    expected = [keys[level].id for level in Priority for _ in range(2)]
    assert served == expected


def test_a_key_priority_is_set_by_id_or_prefix(store: Store) -> None:
    key = store.add_key(name="a", key_hash="h1", prefix="rf_aaaaa")
    assert key.priority is Priority.NORMAL
    assert store.set_key_priority("rf_aaaaa", Priority.HIGH)
    assert store.list_keys()[0].priority is Priority.HIGH
    assert store.set_key_priority(key.id, Priority.LOW)
    found = store.key_for_hash("h1")
    assert found is not None
    assert found.priority is Priority.LOW
    assert not store.set_key_priority("rf_zzzzz", Priority.HIGH)
    store.add_key(name="b", key_hash="h2", prefix="rf_aaaaa")
    with pytest.raises(ValueError, match="2 active keys"):
        store.set_key_priority("rf_aaaaa", Priority.HIGH)


def test_a_deferred_job_passes_its_key_turn_to_its_next_job(store: Store, clock: FakeClock) -> None:
    first = create(store, owner="key-a")
    lease = claim(store)
    assert store.requeue(lease, delay_seconds=60, reason="storage")
    later = create(store, owner="key-a")
    assert claim(store).job.id == later.id
    assert first.id != later.id


def test_the_claim_filters_models_per_key(store: Store, clock: FakeClock) -> None:
    create(store, owner="key-a", model="wan")
    clock.advance(1)
    wanted = create(store, owner="key-b", model="preview")
    lease = store.claim(worker_id="w", lease_seconds=30, models=["preview"])
    assert lease is not None
    assert lease.job.id == wanted.id


# --- the outlook ---------------------------------------------------------------------------


def test_the_outlook_orders_the_queue_in_rounds_across_keys(store: Store, clock: FakeClock) -> None:
    a = [create(store, owner="key-a") for _ in range(3)]
    clock.advance(1)
    b = create(store, owner="key-b")
    create(store, owner="key-c", model="wan")
    outlook = store.outlook("preview", within=10)
    a_ids = [job.id for job in sorted(a, key=lambda job: (job.created_at, job.id))]
    assert outlook.order == (a_ids[0], b.id, a_ids[1], a_ids[2])
    assert (outlook.generation_seconds, outlook.workers, outlook.running_since) == (None, 0, ())
    assert outlook.now == clock.now


def test_the_outlook_puts_higher_priority_keys_first(store: Store, clock: FakeClock) -> None:
    low = create(store, owner="key-low")
    clock.advance(1)
    key = store.add_key(name="vip", key_hash="h", prefix="rf_vip00", priority=Priority.HIGH)
    high = create(store, owner=key.id)
    assert store.outlook("preview", within=10).order == (high.id, low.id)


def test_the_pace_is_a_moving_mean_of_completed_generations(store: Store, clock: FakeClock) -> None:
    for _ in range(3):
        create(store)
    _run_one(store, clock, seconds=10)
    assert store.outlook("preview", within=10).generation_seconds == pytest.approx(10)
    _run_one(store, clock, seconds=20)
    expected = 10 + PACE_WEIGHT * (20 - 10)
    assert store.outlook("preview", within=10).generation_seconds == pytest.approx(expected)
    lease = claim(store)  # a failure does not count
    clock.advance(100)
    store.fail(lease, error_name="Boom", error_message="no", credits_used=0)
    assert store.outlook("preview", within=10).generation_seconds == pytest.approx(expected)


def test_the_outlook_counts_the_models_workers_and_running_jobs(
    store: Store, clock: FakeClock
) -> None:
    store.report_worker("w1", models=["preview", "wan"])
    store.report_worker("w2", models=["wan"])
    clock.advance(30)
    store.report_worker("w3", models=["preview"])
    create(store)
    create(store)
    claim(store, worker_id="w3")
    outlook = store.outlook("preview", within=10)
    assert (outlook.workers, outlook.running_since) == (1, (T0 + 30,))
    assert store.outlook("wan", within=60).workers == 2
    claim(store, worker_id="w1")  # a busy worker does not report, but counts
    assert store.outlook("preview", within=10).workers == 2


def test_a_high_priority_key_at_its_running_limit_yields_its_turn(
    store: Store, clock: FakeClock
) -> None:
    vip = store.add_key(
        name="vip",
        key_hash="h",
        prefix="rf_vip00",
        limits=KeyLimits(max_running=1),
        priority=Priority.HIGH,
    )
    for _ in range(2):
        create(store, owner=vip.id)
    clock.advance(1)
    other = create(store, owner="key-b")
    assert claim(store).job.owner == vip.id
    assert claim(store).job.id == other.id  # vip is at its limit: the next key's turn
    assert store.claim(worker_id="w", lease_seconds=30) is None
