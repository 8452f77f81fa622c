"""The event log's contract, on every backend: each change of a job appends its event in the
change's own transaction (an event exists iff the change happened), ids increase, progress
events are throttled and pruned, and purged jobs lose their events."""

from __future__ import annotations

from typing import Any

from reelforge.contract import Status
from reelforge.jobs.model import (
    PROGRESS_EVENT_SECONDS,
    PROGRESS_EVENTS_KEPT_SECONDS,
    WORKER_LOST,
    EventKind,
    JobEvent,
    Phase,
    Store,
)
from tests.jobs.contract import T0, FakeClock, claim, create


def kinds(store: Store, job_id: str | None = None) -> list[EventKind]:
    return [event.kind for event in store.events_after(0, limit=1000, job_id=job_id)]


def last(store: Store) -> JobEvent:
    return store.events_after(0, limit=1000)[-1]


def test_a_job_that_completes_logs_queued_started_progress_completed(
    store: Store, clock: FakeClock
) -> None:
    job = create(store)
    clock.advance(1)
    lease = claim(store)
    clock.advance(1)
    assert store.heartbeat(lease, lease_seconds=30, progress=40)
    clock.advance(1)
    assert store.complete(lease, video_key="v.mp4", credits_used=1, meta={})
    events = store.events_after(0)
    assert [event.kind for event in events] == [
        EventKind.QUEUED,
        EventKind.STARTED,
        EventKind.PROGRESS,
        EventKind.COMPLETED,
    ]
    assert [event.id for event in events] == sorted({event.id for event in events})
    assert [(e.status, e.progress, e.phase, e.created_at) for e in events] == [
        (Status.QUEUED, 0, None, T0),
        (Status.GENERATING, 0, Phase.PREPARING, T0 + 1),
        (Status.GENERATING, 40, Phase.PREPARING, T0 + 2),
        (Status.COMPLETED, 100, None, T0 + 3),
    ]
    assert {(event.job_id, event.owner) for event in events} == {(job.id, "key-a")}
    assert events[1].data == {"attempts": 1}


def test_events_after_pages_and_filters_by_job(store: Store) -> None:
    first, second = create(store), create(store)
    events = store.events_after(0)
    assert [event.job_id for event in events] == [first.id, second.id]
    assert store.events_after(events[0].id) == events[1:]
    assert store.events_after(0, limit=1) == events[:1]
    assert store.events_after(0, job_id=second.id) == events[1:]
    assert store.events_after(events[-1].id) == []


def test_a_failure_logs_its_error(store: Store) -> None:
    create(store)
    lease = claim(store)
    assert store.fail(lease, error_name="EngineFailed", error_message="OOM", credits_used=1)
    event = last(store)
    assert (event.kind, event.status) == (EventKind.ERROR, Status.ERROR)
    assert event.data == {"error_name": "EngineFailed", "error_message": "OOM"}


def test_cancellations_log_cancelled(store: Store) -> None:
    queued = create(store)
    store.cancel(queued.id, owner="key-a")
    assert kinds(store, queued.id) == [EventKind.QUEUED, EventKind.CANCELLED]
    running = create(store)
    lease = claim(store)
    store.cancel(running.id, owner="key-a")  # only marked: no event
    assert kinds(store, running.id) == [EventKind.QUEUED, EventKind.STARTED]
    assert store.fail(lease, error_name="Cancelled", error_message="stopped", credits_used=1)
    assert kinds(store, running.id)[-1] is EventKind.CANCELLED
    assert last(store).data == {"error_name": "Cancelled", "error_message": "stopped"}


def test_delete_logs_deleted_after_the_cancel(store: Store, clock: FakeClock) -> None:
    queued = create(store)
    clock.advance(2)
    store.delete(queued.id, owner="key-a")
    assert kinds(store, queued.id) == [EventKind.QUEUED, EventKind.CANCELLED, EventKind.DELETED]
    event = last(store)
    assert (event.status, event.created_at, event.owner) == (Status.ERROR, T0 + 2, "key-a")
    done = create(store)
    assert store.complete(claim(store), video_key="v.mp4", credits_used=1, meta={})
    store.delete(done.id, owner="key-a")
    assert kinds(store, done.id)[-2:] == [EventKind.COMPLETED, EventKind.DELETED]
    assert last(store).status is Status.COMPLETED
    store.delete(done.id, owner="key-a")  # deleted already: nothing happens
    assert kinds(store, done.id)[-1] is EventKind.DELETED
    assert kinds(store, done.id).count(EventKind.DELETED) == 1


def test_release_requeue_and_expiry_log_requeued_with_a_reason(
    store: Store, clock: FakeClock
) -> None:
    job = create(store, max_attempts=2)
    assert store.release(claim(store))
    assert store.requeue(claim(store), delay_seconds=0, reason="storage")
    claim(store, lease_seconds=10)
    clock.advance(11)
    assert store.settle_expired() == 1
    requeued = [e for e in store.events_after(0, job_id=job.id) if e.kind is EventKind.REQUEUED]
    assert [event.data for event in requeued] == [
        {"reason": "released"},
        {"reason": "storage"},
        {"reason": "lease expired"},
    ]
    assert {(event.status, event.progress, event.phase) for event in requeued} == {
        (Status.QUEUED, 0, None)
    }
    claim(store, lease_seconds=10)
    clock.advance(11)
    assert store.settle_expired() == 1
    lost = last(store)
    assert (lost.kind, lost.data["error_name"]) == (EventKind.ERROR, WORKER_LOST)


def test_a_change_that_did_not_happen_logs_nothing(store: Store, clock: FakeClock) -> None:
    create(store)
    stale = claim(store, lease_seconds=10)
    clock.advance(11)
    fresh = claim(store, worker_id="w2")
    before = store.events_after(0)
    assert not store.complete(stale, video_key="stale.mp4", credits_used=1, meta={})
    assert not store.fail(stale, error_name="X", error_message="late", credits_used=1)
    assert not store.heartbeat(stale, lease_seconds=30, progress=90)
    assert not store.release(stale)
    assert not store.requeue(stale, delay_seconds=1, reason="storage")
    assert store.cancel("missing", owner="key-a") is None
    assert store.settle_expired() == 0
    assert store.claim(worker_id="w3", lease_seconds=10) is None
    assert store.events_after(0) == before
    assert store.complete(fresh, video_key="v.mp4", credits_used=1, meta={})
    assert len(store.events_after(0)) == len(before) + 1


def test_progress_events_are_throttled(store: Store, clock: FakeClock) -> None:
    job = create(store)
    lease = claim(store)
    for progress in (10, 20, 30):  # within the throttle: only the first is logged
        assert store.heartbeat(lease, lease_seconds=30, progress=progress)
        clock.advance(PROGRESS_EVENT_SECONDS / 4)
    clock.advance(PROGRESS_EVENT_SECONDS)
    assert store.heartbeat(lease, lease_seconds=30, progress=30)  # logged: 30 was not
    clock.advance(PROGRESS_EVENT_SECONDS)
    assert store.heartbeat(lease, lease_seconds=30, progress=30)  # unchanged: not logged
    assert store.heartbeat(lease, lease_seconds=30)
    events = store.events_after(0, job_id=job.id)
    assert [e.progress for e in events if e.kind is EventKind.PROGRESS] == [10, 30]


def test_a_phase_change_is_always_logged(store: Store, clock: FakeClock) -> None:
    job = create(store)
    lease = claim(store)
    assert store.heartbeat(lease, lease_seconds=30, progress=5)
    assert store.heartbeat(lease, lease_seconds=30, progress=6, phase=Phase.GENERATING)
    assert store.heartbeat(lease, lease_seconds=30, phase=Phase.GENERATING)
    assert store.heartbeat(lease, lease_seconds=30, phase=Phase.ENCODING)
    logged = [
        (event.progress, event.phase)
        for event in store.events_after(0, job_id=job.id)
        if event.kind is EventKind.PROGRESS
    ]
    assert logged == [(5, Phase.PREPARING), (6, Phase.GENERATING), (6, Phase.ENCODING)]


def progress_events(store: Store) -> list[dict[str, Any]]:
    return [
        {"job": event.job_id, "progress": event.progress}
        for event in store.events_after(0, limit=1000)
        if event.kind is EventKind.PROGRESS
    ]


def test_prune_drops_progress_events_of_jobs_ended_long_ago(store: Store, clock: FakeClock) -> None:
    create(store)
    ended = claim(store)
    store.heartbeat(ended, lease_seconds=30, progress=50)
    store.complete(ended, video_key="v.mp4", credits_used=1, meta={})
    create(store)
    running = claim(store)
    store.heartbeat(running, lease_seconds=30, progress=10)
    clock.advance(PROGRESS_EVENTS_KEPT_SECONDS)
    assert store.prune_events() == 0  # not over the time yet
    clock.advance(1)
    assert store.prune_events() == 1
    assert progress_events(store) == [{"job": running.job_id, "progress": 10}]
    assert kinds(store, ended.job_id) == [EventKind.QUEUED, EventKind.STARTED, EventKind.COMPLETED]
    assert store.prune_events() == 0


def test_mark_purged_drops_the_jobs_events(store: Store) -> None:
    create(store)
    create(store)
    purged, kept = claim(store), claim(store)
    for lease in (purged, kept):
        store.complete(lease, video_key="v.mp4", credits_used=1, meta={})
    store.mark_purged([purged.job_id])
    assert kinds(store, purged.job_id) == []
    assert len(kinds(store, kept.job_id)) == 3


def test_last_event_id_is_the_newest_events_id(store: Store) -> None:
    assert store.last_event_id() == 0
    create(store)
    create(store)
    assert store.last_event_id() == store.events_after(0)[-1].id
