"""How right the queue's ETA is: 100 generations queued at once on 2 workers, each job's
forecast start and end against when it really started and ended.

Run: ``python bench/eta.py [--jobs 100] [--scale 0.3]`` (about a minute). It starts
``python -m reelforge serve --workers 2`` on SQLite in a temp directory (the preview engine
at ``REELFORGE_PREVIEW_SCALE=--scale``, about half a second a job here), runs
``WARMUP`` jobs so the model has a pace, queues ``--jobs`` jobs as fast as it can, then takes
two readings of every job's forecast: the wire's (each poll's ``eta_seconds``, whole
seconds, plus the time of the poll) and, at the same moment, ``api.forecast.Forecasts`` on
the same database (its float start and end). It takes the same readings again once half the
jobs are done, for the jobs still queued. When all are done it prints, per reading, the
error (forecast minus actual, seconds; positive: later than it happened) of the start and
the end: mean, median, 90th percentile of its size, and the mean size as a share of the
actual wait. Only 127.0.0.1 is contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from dispatch import BODY, HEADERS, KEY, STOP_S, WORKERS, Server, wait_ready
from harness import ROUTE, free_port, percentile, stop
from reelforge.api.forecast import Forecasts
from reelforge.jobs.model import Job
from reelforge.jobs.sqlite import SQLiteJobStore

WARMUP = 6
DONE_S = 300.0


@dataclass(frozen=True)
class Guess:
    """One job's forecast, epoch seconds: from the wire (end only) and in process."""

    wire_end: float | None
    starts_at: float | None
    ends_at: float | None


@contextmanager
def serve(scale: float) -> Iterator[Server]:
    """``reelforge serve --workers 2`` on SQLite, its preview engine at ``scale``."""
    with tempfile.TemporaryDirectory(prefix="reelforge-eta-") as directory:
        port = free_port()
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")
        }
        env |= {
            "REELFORGE_DATA_DIR": str(Path(directory) / "data"),
            "REELFORGE_API_KEY": KEY,
            "REELFORGE_PREVIEW_SCALE": str(scale),
            "REELFORGE_X264_PRESET": "ultrafast",
            "REELFORGE_DRAIN_SECONDS": "5",
        }
        log = Path(directory) / "server.log"
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", str(WORKERS)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                env=env,
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(f"http://127.0.0.1:{port}", process, Path(directory) / "data", log)
        try:
            wait_ready(server)
            yield server
        finally:
            stop(process, STOP_S)


def create(client: httpx.Client, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = client.post(ROUTE, json=BODY)
        response.raise_for_status()
        ids.append(response.json()["generation_id"])
    return ids


def wait_all(store: SQLiteJobStore, ids: list[str], *, until_done: int) -> list[Job]:
    """Poll the store until ``until_done`` of ``ids`` are finished; their jobs."""
    deadline = time.monotonic() + DONE_S
    while time.monotonic() < deadline:
        jobs = [job for job in map(store.get, ids) if job is not None]
        if sum(job.status.is_terminal for job in jobs) >= until_done:
            return jobs
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {until_done} of {len(ids)} jobs ended within {DONE_S} s")


def read(client: httpx.Client, store: SQLiteJobStore, ids: list[str]) -> dict[str, Guess]:
    """Every still-queued job's forecast, from the wire and in process."""
    forecasts = Forecasts(store, ready_within=60)
    guesses = {}
    for job in (store.get(job_id) for job_id in ids):
        if job is None or job.status.value != "queued":
            continue
        polled = time.time()
        eta = client.get(ROUTE, params={"generation_id": job.id}).json()["eta_seconds"]
        forecast = forecasts.of(job)
        wire_end = None if eta is None else polled + eta
        guesses[job.id] = Guess(wire_end, forecast.starts_at, forecast.ends_at)
    return guesses


def report(name: str, guesses: dict[str, Guess], jobs: dict[str, Job], at: float) -> None:
    """Print the errors of ``guesses`` (read at ``at``) against the jobs' actual times."""
    rows: dict[str, list[tuple[float, float]]] = {"start": [], "end": [], "end (wire)": []}
    for job_id, guess in guesses.items():
        job = jobs[job_id]
        assert job.started_at is not None
        assert job.finished_at is not None
        for label, forecast, actual in (
            ("start", guess.starts_at, job.started_at),
            ("end", guess.ends_at, job.finished_at),
            ("end (wire)", guess.wire_end, job.finished_at),
        ):
            if forecast is not None:
                rows[label].append((forecast - actual, actual - at))
    print(f"{name}: {len(guesses)} queued jobs")
    for label, pairs in rows.items():
        if not pairs:
            print(f"  {label:<11} no estimate")
            continue
        errors = [error for error, _ in pairs]
        sizes = [abs(error) for error in errors]
        share = statistics.fmean(sizes) / statistics.fmean(wait for _, wait in pairs)
        print(
            f"  {label:<11} error mean {statistics.fmean(errors):+6.2f} s"
            f"  |error| p50 {percentile(sizes, 0.5):5.2f} s  p90 {percentile(sizes, 0.9):5.2f} s"
            f"  = {share:5.1%} of the mean wait ({statistics.fmean(w for _, w in pairs):.1f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--scale", type=float, default=0.3)
    args = parser.parse_args()
    with (
        serve(args.scale) as server,
        httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=10) as client,
    ):
        store = SQLiteJobStore(server.data_dir / "reelforge.sqlite3")
        try:
            warm = create(client, WARMUP)
            wait_all(store, warm, until_done=WARMUP)
            pace = store.outlook(BODY["model"], within=60).generation_seconds or 0.0
            print(f"{WORKERS} workers, preview at scale {args.scale}: pace {pace:.2f} s a job")
            ids = create(client, args.jobs)
            first_at = time.time()
            first = read(client, store, ids)
            wait_all(store, ids, until_done=args.jobs // 2)
            half_at = time.time()
            half = read(client, store, ids)
            jobs = {job.id: job for job in wait_all(store, ids, until_done=args.jobs)}
        finally:
            store.close()
    report("all queued", first, jobs, first_at)
    report("half done", half, jobs, half_at)


if __name__ == "__main__":
    main()
