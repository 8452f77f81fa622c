"""Any API process streams any job: two real ``reelforge serve --workers 0`` processes on one
store (one SQLite file; one PostgreSQL schema) and a real worker process; the job is created
on B and streamed live on A, the worker started only once A's stream is open. On PostgreSQL
the processes' poll of the log is set to a minute: only ``NOTIFY`` can wake A in time."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from reelforge.events.stream import SHUTDOWN_GRACE_S
from tests.events.sse import read_stream
from tests.postgres import throwaway_schema
from tests.scale.cluster import FAST_JOBS, REAL_WORKER, Cluster
from tests.service import LEGACY, TEST_KEY

LIVE_S = 12.0
"""From the worker's start to the stream's end: under the 15 s heartbeat that would also
re-read the log."""
BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk [Push in]"}


@contextmanager
def two_apis(directory: Path, database_url: str | None) -> Iterator[Cluster]:
    """Two API processes on one store, no worker yet (``start_worker(0)`` adds one)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        FAST_JOBS,
        REELFORGE_DATA_DIR=str(directory / "data"),
        REELFORGE_API_KEY=TEST_KEY,
        REELFORGE_URL_SECRET="s" * 32,
        REELFORGE_STREAM_POLL_SECONDS="0.05",
    )
    if database_url is not None:  # NOTIFY alone must wake the streams in time
        env["REELFORGE_DATABASE_URL"] = database_url
        env["REELFORGE_STREAM_POLL_SECONDS"] = "60"
    cluster = Cluster(directory, env, REAL_WORKER, env)
    try:
        cluster.start_api()
        cluster.start_api()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    if request.param == "sqlite":
        with two_apis(tmp_path, None) as running:
            yield running
        return
    with throwaway_schema() as url, two_apis(tmp_path, url) as running:
        yield running


def test_a_job_created_on_one_api_process_streams_live_on_another(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    a, b = (httpx.Client(base_url=url, headers=headers, timeout=30) for url in cluster.api_urls)
    with a, b:
        generation_id = b.post(LEGACY, json=BODY).json()["generation_id"]
        path, params = LEGACY + "/events", {"generation_id": generation_id}
        with a.stream("GET", path, params=params) as first:
            lines = first.iter_lines()
            assert next(lines).startswith("id: ")  # the queued event, before any worker runs
            started = time.monotonic()
            cluster.start_worker(0)
            rest = list(lines)
            took = time.monotonic() - started
        resumed = read_stream(a, path, params=params)
        whole = read_stream(b, path, params=params)
        final = b.get(LEGACY, params=params).json()
    assert took < LIVE_S  # woken by the log (or NOTIFY), not by a heartbeat's re-read
    assert resumed.ended
    assert whole.ended
    assert "event: generation" in rest
    answers = whole.answers
    assert answers[0]["status"] == "queued"
    assert answers[-1] == final
    assert final["status"] == "completed"
    assert [answer["progress"] for answer in answers] == sorted(a["progress"] for a in answers)
    assert whole.ids == sorted(set(whole.ids))
    streamed = [line.removeprefix("id: ") for line in rest if line.startswith("id: ")]
    assert [int(i) for i in streamed] == whole.ids[1:]  # live on A: every later event, once
    assert resumed.ids == whole.ids  # a fresh stream on A replays the same log


def test_sigterm_ends_a_process_with_an_open_stream(tmp_path: Path) -> None:
    """Open streams do not hold up a stop: the server ends them after its grace period and
    exits (the client resumes on another process with ``Last-Event-ID``)."""
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    with two_apis(tmp_path, None) as running:
        limit = SHUTDOWN_GRACE_S + 5
        with httpx.Client(base_url=running.api_urls[0], headers=headers, timeout=limit) as a:
            generation_id = a.post(LEGACY, json=BODY).json()["generation_id"]
            params = {"generation_id": generation_id}
            with a.stream("GET", LEGACY + "/events", params=params) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("id: ")
                started = time.monotonic()
                running.apis[0].terminate()
                with contextlib.suppress(httpx.TransportError):
                    list(lines)  # the server ends the stream
                running.apis[0].wait(limit)
            assert time.monotonic() - started < limit
