"""The delivery loop in-process, on a real SQLite store and a loopback receiver: the retry
schedule (doubling from the first delay, jittered ±20%, capped, given up after 24 h), OpenAI's
``video.failed`` for a cancelled video, and no webhook for progress or for a deleted job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from reelforge.events.delivery import (
    CONCURRENCY,
    GIVE_UP_SECONDS,
    MAX_DELAY_SECONDS,
    Deliverer,
    retry_delay,
)
from reelforge.jobs.model import Store
from reelforge.jobs.outbox import Delivery
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest, Resolution
from reelforge.runtime import open_storage
from reelforge.settings import Settings
from tests.events.conftest import SECRET, hook_settings
from tests.events.receiver import Receiver, receiving
from tests.postgres import throwaway_schema

REQUEST = JobRequest(prompt="a kite", duration_s=6, size=Resolution.P768)


def test_the_retry_delay_doubles_from_the_first_within_its_jitter() -> None:
    assert [retry_delay(n, 5.0, jitter=lambda: 0.5) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry_delay(1, 5.0, jitter=lambda: 0.0) == pytest.approx(4.0)
    assert retry_delay(1, 5.0, jitter=lambda: 1.0) == pytest.approx(6.0)
    assert retry_delay(40, 5.0, jitter=lambda: 0.5) == MAX_DELAY_SECONDS


def test_a_delivery_gives_up_after_24_hours(tmp_path: Path) -> None:
    settings = hook_settings(tmp_path)
    now = [1_000_000.0]
    with closing(SQLiteJobStore(settings.database_path)) as store:
        deliverer = Deliverer(settings, store, open_storage(settings), clock=lambda: now[0])
        young = _delivery(created_at=now[0] - 60)
        old = _delivery(created_at=now[0] - GIVE_UP_SECONDS + 0.01)
        assert deliverer.retry_at(young) is not None
        assert deliverer.retry_at(old) is None


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend, with one key whose secret is ``SECRET``."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            opened: Store = SQLiteJobStore(hook_settings(tmp_path).database_path)
        else:
            opened = PostgresJobStore(stack.enter_context(throwaway_schema()))
        stack.enter_context(closing(opened))
        key = opened.add_key(name="k", key_hash="h" * 64, prefix="rf_abcde")
        opened.set_key_webhook(key.id, url=None, secret=SECRET)
        yield opened


def test_a_cancelled_openai_video_sends_video_failed_only(store: Store, tmp_path: Path) -> None:
    owner = store.list_keys()[0].id
    with receiving() as receiver:
        job = store.create(
            owner=owner,
            model="preview",
            request=REQUEST,
            max_attempts=1,
            dialect="openai",
            callback_url=receiver.url,
        )
        store.cancel(job.id, owner=owner)
        _deliver_until(hook_settings(tmp_path), store, receiver, count=1)
    (only,) = receiver.received
    event = Webhook(SECRET).verify(only.body, only.headers)
    assert (event["type"], event["data"]) == ("video.failed", {"id": job.id})


def test_a_job_deleted_before_its_events_are_read_sends_nothing(
    store: Store, tmp_path: Path
) -> None:
    owner = store.list_keys()[0].id
    with receiving() as receiver:
        job = store.create(
            owner=owner,
            model="preview",
            request=REQUEST,
            max_attempts=1,
            callback_url=receiver.url,
        )
        store.delete(job.id, owner=owner)
        kept = store.create(
            owner=owner,
            model="preview",
            request=REQUEST,
            max_attempts=1,
            callback_url=receiver.url,
        )
        _deliver_until(hook_settings(tmp_path), store, receiver, count=1)
    assert [got.json()["id"] for got in receiver.received] == [kept.id]


def test_a_2xx_with_a_large_answer_is_delivered(store: Store, tmp_path: Path) -> None:
    owner = store.list_keys()[0].id
    with receiving() as receiver:
        receiver.answer = lambda request: (200, {"pad": "x" * 200_000})
        job = store.create(
            owner=owner,
            model="preview",
            request=REQUEST,
            max_attempts=1,
            callback_url=receiver.url,
        )
        _deliver_until(hook_settings(tmp_path), store, receiver, count=1)
    attempts = store.attempts(owner=owner, job_id=job.id, limit=10)
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [(1, 200, None)]


def test_a_slow_receiver_holds_up_no_other(store: Store, tmp_path: Path) -> None:
    owner = store.list_keys()[0].id
    with receiving(delay=3.0) as slow, receiving() as fast:
        for _ in range(2 * CONCURRENCY):  # more than the whole pool, all to the slow one
            job = store.create(
                owner=owner,
                model="preview",
                request=REQUEST,
                max_attempts=1,
                callback_url=slow.url,
            )
        started = time.monotonic()
        job = store.create(
            owner=owner,
            model="preview",
            request=REQUEST,
            max_attempts=1,
            callback_url=fast.url,
        )
        _deliver_until(hook_settings(tmp_path), store, fast, count=1)
        took = time.monotonic() - started
        in_flight = len(slow.received)
    assert [got.json()["id"] for got in fast.received] == [job.id]
    assert took < 2.5, f"the fast receiver waited {took:.2f} s"
    assert in_flight == 0  # the slow one had not answered anything yet


def _deliver_until(settings: Settings, store: Store, receiver: Receiver, *, count: int) -> None:
    """Run a delivery loop until ``receiver`` has ``count`` requests (and a little longer)."""
    stop = threading.Event()
    deliverer = Deliverer(settings, store, open_storage(settings))
    thread = threading.Thread(target=deliverer.run, args=(stop,))
    thread.start()
    try:
        receiver.wait_for(count, timeout=10)
        stop.wait(0.5)  # room for anything that should not come
    finally:
        stop.set()
        thread.join(10)


def _delivery(*, created_at: float) -> Delivery:
    return Delivery(
        id="msg_x",
        event_id=1,
        job_id="j",
        owner="o",
        url="http://x/",
        event="e",
        body={},
        attempts=0,
        created_at=created_at,
        token="t",
    )
