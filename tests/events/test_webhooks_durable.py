"""Webhooks survive their deliverer: jobs complete while the receiver is down (it never
answers), the worker process delivering them is SIGKILLed mid-send, and once the receiver is
back a fresh worker delivers every event, in order per generation, none twice with a 2xx."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import time
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path

from reelforge.jobs.model import Store
from reelforge.runtime import start_workers
from tests.events.conftest import hook_settings
from tests.events.receiver import Receiver
from tests.service import running_api, running_workers

JOBS = 4
ORDER = ["queued", "generating", "completed"]


def test_every_event_arrives_after_a_dead_receiver_and_a_killed_deliverer(
    tmp_path: Path,
) -> None:
    settings = hook_settings(tmp_path)
    receiver = Receiver()
    # Down: the port takes connections into its backlog and never answers, so the deliverer
    # is killed mid-send (each send waits for its 1 s timeout), holding leases.
    hole = socket.create_server(("127.0.0.1", receiver.port), backlog=64)
    with running_api(settings) as api, closing(hole):
        first = start_workers(settings, 1)[0]
        body = {"model": "minimax/hailuo-02", "prompt": "rain", "callback_url": receiver.url}
        ids = [api.create(body).json()["generation_id"] for _ in range(JOBS)]
        for generation_id in ids:
            assert api.wait(generation_id)["status"] == "completed"
        _wait_for_failed_attempts(api.store, count=JOBS)
        _wait_for_leases(settings.database_path)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        first.join(10)
        hole.close()
        receiver.start()
        try:
            with running_workers(settings):
                arrived = receiver.wait_for(JOBS * len(ORDER), timeout=60)
                time.sleep(1.0)  # room for a duplicate to show up
                arrived = list(receiver.received)
        finally:
            receiver.stop()
    assert all(got.status == 200 for got in arrived)
    ids_sent = Counter(got.headers["webhook-id"] for got in arrived)
    assert max(ids_sent.values()) == 1, "a delivery arrived twice with a 2xx answer"
    statuses = defaultdict(list)
    for got in arrived:
        statuses[got.json()["id"]].append(got.json()["status"])
    assert statuses == dict.fromkeys(ids, ORDER)


def _wait_for_failed_attempts(store: Store, *, count: int, timeout: float = 30) -> None:
    """Until ``count`` failed attempts (timeouts) are recorded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tried = store.attempts(owner=None, job_id=None, limit=count)
        if len(tried) >= count:
            assert all(attempt.status_code is None and attempt.error for attempt in tried)
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} attempts within {timeout} s")


def _wait_for_leases(database: Path, timeout: float = 10) -> None:
    """Until some delivery is held by a sender (it is being sent right now)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(database)) as db:
            query = "SELECT COUNT(*) FROM webhook_deliveries WHERE lease_token IS NOT NULL"
            if db.execute(query).fetchone()[0] > 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"no delivery was being sent within {timeout} s")
