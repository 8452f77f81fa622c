"""reelforge's Prometheus metrics: their names, and the one set each process counts into.

Like a logger, a process's metrics are one set, made on first use (``process_metrics``) and
counted into wherever the counting code lives, in one line::

    process_metrics().webhook_deliveries.labels(outcome="delivered").inc()
    process_metrics().upstream_calls.labels(provider="minimax", outcome="ok").inc()

Several processes (``reelforge serve --api-processes N --workers M``): ``serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any process starts, so that every one
of them writes its values there and ``GET /metrics`` in any API process reads them all
(``prometheus_client``'s multiprocess mode). Without that variable a process exports only
its own values.

Per-job series are counted by one reader of the event log per ``serve``
(``events.metrics``); queued and running jobs and ready models are read from the store at
each scrape (``api.observe``), so they are right across machines.
"""

from __future__ import annotations

import functools
import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Seconds of one HTTP answer."""
JOB_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds a job waits in the queue, or generates."""


class Metrics:
    """Every metric reelforge counts itself, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "reelforge_http_requests",
            "HTTP answers by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "reelforge_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._jobs(registry)
        self.webhook_deliveries = Counter(
            "reelforge_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, gave_up).",
            ["outcome"],
            registry=registry,
        )
        self.upstream_calls = Counter(
            "reelforge_upstream_calls",
            "Calls to hosted providers by provider and outcome (ok, error, timeout).",
            ["provider", "outcome"],
            registry=registry,
        )

    def _jobs(self, registry: CollectorRegistry) -> None:
        self.jobs_created = Counter(
            "reelforge_jobs_created", "Jobs created, by model.", ["model"], registry=registry
        )
        self.jobs_completed = Counter(
            "reelforge_jobs_completed", "Jobs completed, by model.", ["model"], registry=registry
        )
        self.jobs_failed = Counter(
            "reelforge_jobs_failed",
            "Jobs ended in error (not cancelled), by model and error name.",
            ["model", "error"],
            registry=registry,
        )
        self.jobs_cancelled = Counter(
            "reelforge_jobs_cancelled", "Jobs cancelled, by model.", ["model"], registry=registry
        )
        self.jobs_requeued = Counter(
            "reelforge_jobs_requeued",
            "Jobs queued again (lease expired, released, storage), by model and reason.",
            ["model", "reason"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "reelforge_job_queue_wait_seconds",
            "Time from queued to started, by model.",
            ["model"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.generation_seconds = Histogram(
            "reelforge_job_generation_seconds",
            "Time from started to completed of the jobs that completed, by model.",
            ["model"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.busy_seconds = Counter(
            "reelforge_worker_busy_seconds",
            "Worker time spent on jobs (started to its end or requeue), by model.",
            ["model"],
            registry=registry,
        )


def multiprocess_dir() -> str | None:
    """The folder every process writes its values to, if multiprocess mode is on."""
    return os.environ.get(MULTIPROC_ENV)


@functools.cache
def process_metrics() -> Metrics:
    """This process's metrics, made on first use (after ``serve`` set ``MULTIPROC_ENV``)."""
    return Metrics(CollectorRegistry(auto_describe=True))
