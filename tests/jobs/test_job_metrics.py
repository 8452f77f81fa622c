"""The per-job metrics reader (``events.metrics``) on every store backend: it counts what the
event log says from where the log ended when it started, including what the store itself
decides (an expired lease requeued, then lost for good)."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from reelforge.events.metrics import JobMetrics
from reelforge.jobs.model import Store
from reelforge.metrics import Metrics
from tests.jobs.contract import FakeClock, claim, create


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_counts_from_the_log_end_at_start(store: Store, clock: FakeClock) -> None:
    lost = create(store, max_attempts=3)  # queued before the reader: its creation not counted
    metrics = Metrics(CollectorRegistry())
    reader = JobMetrics(store, metrics)
    clock.advance(1)
    create(store)
    store.cancel(create(store).id, owner="key-a")
    for _ in range(3):  # ``lost``, the oldest, each time: its lease left to expire
        assert claim(store, lease_seconds=1).job_id == lost.id
        clock.advance(2)
        store.settle_expired()
    assert reader.poll() > 0
    assert sample(metrics, "reelforge_jobs_created_total", model="preview") == 2
    assert sample(metrics, "reelforge_worker_busy_seconds_total", model="preview") == 6
    assert sample(metrics, "reelforge_jobs_cancelled_total", model="preview") == 1
    failed = {"model": "preview", "error": "WorkerLost"}
    assert sample(metrics, "reelforge_jobs_failed_total", **failed) == 1
    requeued = {"model": "preview", "reason": "lease expired"}
    assert sample(metrics, "reelforge_jobs_requeued_total", **requeued) == 2
    assert store.get(lost.id).error_name == "WorkerLost"  # type: ignore[union-attr]
    assert reader.poll() == 0  # nothing counted twice


def test_run_counts_until_stopped(store: Store) -> None:
    metrics = Metrics(CollectorRegistry())
    stop = threading.Event()
    reader = JobMetrics(store, metrics)
    thread = threading.Thread(target=reader.run, args=(stop,), kwargs={"interval": 0.01})
    thread.start()
    try:
        create(store)
        deadline = time.monotonic() + 5
        while sample(metrics, "reelforge_jobs_created_total", model="preview") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
