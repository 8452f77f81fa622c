"""``GET /metrics``: the right counts after a run of 20 jobs (per-job series read from the
event log, queued and running from the store), and who may read it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from reelforge.api.app import Services, create_app
from reelforge.events.metrics import JobMetrics
from reelforge.jobs.model import Lease
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.metrics import Metrics
from reelforge.runtime import load_models, open_storage
from reelforge.settings import Settings
from reelforge.startup import ensure_key
from tests.jobs.contract import FakeClock
from tests.service import LEGACY, TEST_KEY, service_settings

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MODEL = "minimax/hailuo-02"
LOOPBACK = ("127.0.0.1", 50000)


@dataclass
class Deployment:
    """The app on a store with a fake clock, its own metrics, and the event-log reader."""

    settings: Settings
    store: SQLiteJobStore
    clock: FakeClock
    reader: JobMetrics

    def client(self, host: str = "127.0.0.1", **overrides: Any) -> TestClient:
        settings = service_settings(self.settings.data_dir, **overrides)  # validated
        storage = open_storage(settings)
        services = Services(
            settings, self.store, storage, load_models(settings), metrics=self.reader.metrics
        )
        return TestClient(create_app(services), client=(host, 50000))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    settings = service_settings(tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    clock = FakeClock()
    store = SQLiteJobStore(settings.database_path, clock=clock)
    ensure_key(settings, store)
    yield Deployment(settings, store, clock, JobMetrics(store, Metrics(CollectorRegistry())))
    store.close()


def scrape(client: TestClient, **headers: str) -> dict[tuple[str, frozenset[Any]], float]:
    """``/metrics`` as {(sample name, its labels): value}."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def run(deployment: Deployment, *, seconds: float) -> Lease:
    """Claim the oldest queued job after it waited 2 s; the clock then moves ``seconds``."""
    deployment.clock.advance(2.0)
    lease = deployment.store.claim(worker_id="w", lease_seconds=600)
    assert lease is not None
    deployment.clock.advance(seconds)
    return lease


def test_metrics_after_twenty_jobs(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """20 jobs: 12 completed, 3 EngineFailed and 2 TimedOut, 1 cancelled while queued,
    1 still running, 1 still queued; every count, sum and gauge is exact, and each
    transition is one log line."""
    caplog.set_level(logging.INFO, logger="reelforge.jobs")
    with deployment.client() as client:
        ids = [
            client.post(LEGACY, json={"model": MODEL, "prompt": f"job {n}"}, headers=AUTH).json()
            for n in range(20)
        ]
        cancelled = ids[0]["generation_id"]
        assert client.delete(LEGACY, params={"generation_id": cancelled}, headers=AUTH).is_success
        store = deployment.store
        for _ in range(12):
            store.complete(run(deployment, seconds=10.0), video_key="v", credits_used=1, meta={})
        for error in ["EngineFailed"] * 3 + ["TimedOut"] * 2:
            lease = run(deployment, seconds=4.0)
            store.fail(lease, error_name=error, error_message="no", credits_used=1)
        run(deployment, seconds=1.0)  # still generating
        client.get(LEGACY, params={"generation_id": ids[1]["generation_id"]}, headers=AUTH)
        deployment.reader.poll()
        samples = scrape(client)

    assert value(samples, "reelforge_jobs_created_total", model=MODEL) == 20
    assert value(samples, "reelforge_jobs_completed_total", model=MODEL) == 12
    assert value(samples, "reelforge_jobs_failed_total", model=MODEL, error="EngineFailed") == 3
    assert value(samples, "reelforge_jobs_failed_total", model=MODEL, error="TimedOut") == 2
    assert value(samples, "reelforge_jobs_cancelled_total", model=MODEL) == 1
    assert value(samples, "reelforge_job_queue_wait_seconds_count", model=MODEL) == 18
    assert value(samples, "reelforge_job_generation_seconds_count", model=MODEL) == 12
    assert value(samples, "reelforge_job_generation_seconds_sum", model=MODEL) == 120
    assert value(samples, "reelforge_worker_busy_seconds_total", model=MODEL) == 12 * 10 + 5 * 4
    assert value(samples, "reelforge_jobs_queued", model=MODEL) == 1
    assert value(samples, "reelforge_jobs_running", model=MODEL) == 1
    assert value(samples, "reelforge_model_ready", model=MODEL) == 0  # no worker reported
    create = {"method": "POST", "route": LEGACY, "status": "200"}
    assert value(samples, "reelforge_http_requests_total", **create) == 20
    poll = {"method": "GET", "route": LEGACY, "status": "200"}
    assert value(samples, "reelforge_http_requests_total", **poll) == 1  # the hot route
    lines = [record.getMessage() for record in caplog.records if record.name == "reelforge.jobs"]
    assert len(lines) == 20 + 18 + 12 + 5 + 1
    job = re.escape(ids[1]["generation_id"])
    assert re.fullmatch(rf"job {job} {MODEL} queued 0\.000s attempt 0", lines[1])
    assert (
        sum(
            bool(re.fullmatch(rf"job \w+ {MODEL} completed 10\.000s attempt 1", line))
            for line in lines
        )
        == 12
    )
    assert sum(" error 4.000s attempt 1" in line for line in lines) == 5
    timed = {"method": "POST", "route": LEGACY}
    assert value(samples, "reelforge_http_request_duration_seconds_count", **timed) == 20


def test_queue_wait_is_measured_from_the_event_log(deployment: Deployment) -> None:
    """A job queued, claimed 2 s later, requeued (released), claimed 2 s later: two waits of
    2 s, one requeue, and the busy time of both attempts."""
    with deployment.client() as client:
        client.post(LEGACY, json={"model": MODEL, "prompt": "again"}, headers=AUTH)
        deployment.store.release(run(deployment, seconds=3.0))
        deployment.store.complete(
            run(deployment, seconds=5.0), video_key="v", credits_used=1, meta={}
        )
        deployment.reader.poll()
        samples = scrape(client)
    assert value(samples, "reelforge_job_queue_wait_seconds_sum", model=MODEL) == 4.0
    assert value(samples, "reelforge_jobs_requeued_total", model=MODEL, reason="released") == 1
    assert value(samples, "reelforge_worker_busy_seconds_total", model=MODEL) == 8.0


@pytest.mark.parametrize(
    ("host", "allow", "status"),
    [
        ("127.0.0.1", [], 200),
        ("::1", [], 200),
        ("10.1.2.3", [], 403),
        ("10.1.2.3", ["10.0.0.0/8"], 200),
        ("192.168.1.9", ["10.0.0.0/8"], 403),
        ("testclient", [], 403),  # not an address: refused
    ],
)
def test_without_a_token_only_loopback_and_allowed_networks(
    deployment: Deployment, host: str, allow: list[str], status: int
) -> None:
    with deployment.client(host, metrics_allow=allow) as client:
        assert client.get("/metrics").status_code == status


def test_with_a_token_only_that_bearer_token(deployment: Deployment) -> None:
    """The token replaces the address rule: loopback without it is 401, elsewhere with it
    200; an API key is not the token."""
    with deployment.client("10.1.2.3", metrics_token="scrape-token-0123") as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=AUTH).status_code == 401
        scrape(client, Authorization="Bearer scrape-token-0123")
    with deployment.client("127.0.0.1", metrics_token="scrape-token-0123") as client:
        assert client.get("/metrics").status_code == 401
