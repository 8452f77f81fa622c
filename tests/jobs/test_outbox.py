"""The webhook outbox's contract, on every backend: the deriver's cursor moves by
compare-and-set; a claim takes only the head of each (job, URL) line, never a delivery
another sender holds, at most ``PER_URL`` per URL and none to a busy URL; attempts are
recorded under the lease; retention drops a job's deliveries; keys hold their endpoint and
secret."""

from __future__ import annotations

import pytest

from reelforge.jobs.model import Store
from reelforge.jobs.outbox import PER_URL, NewDelivery
from tests.jobs.contract import T0, FakeClock, create

A, B = "http://a.example/hook", "http://b.example/hook"


def new(job_id: str, event_id: int, url: str = A, owner: str = "key-a") -> NewDelivery:
    return NewDelivery(
        id=f"msg_{job_id[:8]}_{event_id}_{url[7]}",
        event_id=event_id,
        job_id=job_id,
        owner=owner,
        url=url,
        event="completed",
        body={"id": job_id, "n": event_id},
    )


def test_the_cursor_moves_by_compare_and_set(store: Store) -> None:
    job = create(store)
    start = store.webhook_cursor()
    assert store.add_deliveries(seen=start, upto=start + 1, deliveries=[new(job.id, 1)])
    assert store.webhook_cursor() == start + 1
    assert not store.add_deliveries(seen=start, upto=start + 2, deliveries=[new(job.id, 2)])
    claimed = store.claim_deliveries(limit=10, lease_seconds=30)
    assert [delivery.event_id for delivery in claimed] == [1]
    assert claimed[0].body == {"id": job.id, "n": 1}


def test_an_event_and_url_pair_is_stored_once(store: Store) -> None:
    job = create(store)
    seen = store.webhook_cursor()
    store.add_deliveries(seen=seen, upto=seen + 1, deliveries=[new(job.id, 1)])
    again = NewDelivery(**{**new(job.id, 1).__dict__, "id": "msg_other"})
    store.add_deliveries(seen=seen + 1, upto=seen + 2, deliveries=[again])
    assert len(store.claim_deliveries(limit=10, lease_seconds=30)) == 1


def test_a_claim_takes_the_head_of_each_line_and_holds_it(store: Store, clock: FakeClock) -> None:
    one, two = create(store), create(store)
    lines = [new(one.id, 1), new(one.id, 2), new(one.id, 3, B), new(two.id, 4)]
    store.add_deliveries(seen=store.webhook_cursor(), upto=10, deliveries=lines)
    claimed = store.claim_deliveries(limit=10, lease_seconds=30)
    assert sorted(d.event_id for d in claimed) == [1, 3, 4]
    assert store.claim_deliveries(limit=10, lease_seconds=30) == []
    first = next(d for d in claimed if d.event_id == 1)
    assert store.record_attempt(first, status_code=200, error=None, retry_at=None)
    assert [d.event_id for d in store.claim_deliveries(limit=10, lease_seconds=30)] == [2]
    clock.advance(31)  # every lease has lapsed: the sender died
    assert sorted(d.event_id for d in store.claim_deliveries(limit=10, lease_seconds=30)) == [
        2,
        3,
        4,
    ]


def test_a_failed_attempt_waits_for_its_retry_and_keeps_its_line(
    store: Store, clock: FakeClock
) -> None:
    job = create(store)
    store.add_deliveries(
        seen=store.webhook_cursor(), upto=10, deliveries=[new(job.id, 1), new(job.id, 2)]
    )
    (first,) = store.claim_deliveries(limit=10, lease_seconds=30)
    assert store.record_attempt(first, status_code=500, error="HTTP 500", retry_at=T0 + 5)
    assert store.claim_deliveries(limit=10, lease_seconds=30) == []
    clock.advance(5)
    (again,) = store.claim_deliveries(limit=10, lease_seconds=30)
    assert (again.id, again.attempts) == (first.id, 1)
    assert store.record_attempt(again, status_code=None, error="refused", retry_at=None)
    (second,) = store.claim_deliveries(limit=10, lease_seconds=30)  # the first gave up
    assert second.event_id == 2
    attempts = store.attempts(owner="key-a", job_id=job.id, limit=10)
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
        (2, None, "refused"),
        (1, 500, "HTTP 500"),
    ]
    assert store.attempts(owner="key-b", job_id=None, limit=10) == []


def test_a_lost_lease_records_nothing(store: Store, clock: FakeClock) -> None:
    job = create(store)
    store.add_deliveries(seen=store.webhook_cursor(), upto=1, deliveries=[new(job.id, 1)])
    (stale,) = store.claim_deliveries(limit=1, lease_seconds=30)
    clock.advance(31)
    (fresh,) = store.claim_deliveries(limit=1, lease_seconds=30)
    assert not store.record_attempt(stale, status_code=200, error=None, retry_at=None)
    assert store.record_attempt(fresh, status_code=200, error=None, retry_at=None)
    assert [a.attempt for a in store.attempts(owner=None, job_id=job.id, limit=10)] == [1]


def test_a_claim_bounds_each_url_and_skips_busy_ones(store: Store) -> None:
    jobs = [create(store) for _ in range(PER_URL + 2)]
    many = [new(job.id, n + 1) for n, job in enumerate(jobs)] + [new(jobs[0].id, 99, B)]
    store.add_deliveries(seen=store.webhook_cursor(), upto=100, deliveries=many)
    assert store.claim_deliveries(limit=50, lease_seconds=30, busy=[A])[0].url == B
    claimed = store.claim_deliveries(limit=50, lease_seconds=30)
    assert [d.url for d in claimed] == [A] * PER_URL


def test_retention_drops_a_jobs_deliveries(store: Store) -> None:
    kept, purged = create(store), create(store)
    store.add_deliveries(
        seen=store.webhook_cursor(), upto=2, deliveries=[new(kept.id, 1), new(purged.id, 2)]
    )
    for delivery in store.claim_deliveries(limit=10, lease_seconds=30):
        store.record_attempt(delivery, status_code=200, error=None, retry_at=None)
    store.mark_purged([purged.id])
    assert [a.job_id for a in store.attempts(owner=None, job_id=None, limit=10)] == [kept.id]


def test_keys_hold_their_endpoint_and_one_secret(store: Store) -> None:
    key = store.add_key(name="k", key_hash="h" * 64, prefix="rf_abcde")
    made = store.key_webhook(key.id, new_secret="whsec_first")
    assert made is not None
    assert (made.url, made.secret) == (None, "whsec_first")
    assert store.set_key_webhook("rf_abcde", url=A)
    found = store.key_webhook(key.id, new_secret="whsec_second")
    assert found is not None
    assert (found.url, found.secret) == (A, "whsec_first")
    assert store.set_key_webhook(key.id, url=None, secret="whsec_set")
    found = store.key_webhook("rf_abcde", new_secret="whsec_third")
    assert found is not None
    assert (found.url, found.secret) == (None, "whsec_set")
    assert store.key_webhook("rf_nobody", new_secret="whsec_x") is None
    assert not store.set_key_webhook("rf_nobody", url=A)
    store.add_key(name="twin", key_hash="i" * 64, prefix="rf_abcde")
    with pytest.raises(ValueError, match="matches 2 active keys"):
        store.set_key_webhook("rf_abcde", url=B)
