"""The fair claim's cost with many queued jobs across keys, on SQLite and PostgreSQL.

Run: ``python bench/claim.py [--jobs 10000]`` (about a minute). For each backend and each
spread of ``--jobs`` queued jobs over 1, 100 and 1000 keys (written straight into the
``jobs`` table, as ``create`` would), it times 200 ``claim`` calls one at a time, each job
finished (untimed) before the next claim (one worker: every claim walks every key with
queued jobs), and ``get`` of a queued job as the floor (one indexed read, same store, same
run). Prints the claim's p50/p99 in ms and the p50 as a ratio to the floor's. It uses only
``claim``/``finish``/``get``, so it runs on older code too (``PYTHONPATH``), for a before
and after. PostgreSQL runs in a schema
this script creates on ``REELFORGE_BENCH_DATABASE_URL`` (default: the local ``test``
database) and drops; it is skipped if unreachable.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg

from dispatch import postgres_server, throwaway_schema
from harness import percentile
from reelforge.jobs.model import Completed, Lease, Store
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest

CLAIMS = 200
T0 = 1_700_000_000.0
SPREADS = (1, 100, 1000)
COLUMNS = (
    "id, owner, model, request, status, progress, attempts, max_attempts, meta, created_at,"
    " updated_at"
)
DONE = Completed(video_key="v.mp4", credits_used=0.0, meta={})


def timed(action: Callable[[], object], times: int) -> list[float]:
    """Seconds each of ``times`` calls of ``action`` took."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def rows(jobs: int, keys: int) -> list[tuple[object, ...]]:
    """``jobs`` queued jobs, round robin over ``keys`` keys, one a millisecond from T0."""
    request = json.dumps(JobRequest(prompt="bench").to_json())
    return [
        (f"job{n:08d}", f"key-{n % keys}", "preview", request, "queued", 0, 0, 1, "{}", t, t)
        for n in range(jobs)
        for t in (T0 + n / 1000,)
    ]


def fill_sqlite(path: Path, jobs: int, keys: int) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        marks = ", ".join("?" * 11)
        conn.executemany(f"INSERT INTO jobs ({COLUMNS}) VALUES ({marks})", rows(jobs, keys))


def fill_postgres(url: str, jobs: int, keys: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        marks = ", ".join(["%s"] * 11)
        cursor.executemany(f"INSERT INTO jobs ({COLUMNS}) VALUES ({marks})", rows(jobs, keys))


def claim_once(store: Store, finished: list[Lease]) -> None:
    """One timed claim; the lease is kept to be finished outside the timing."""
    lease = store.claim(worker_id="bench", lease_seconds=60)
    assert lease is not None
    finished.append(lease)


def measure(name: str, store: Store, jobs: int, keys: int) -> None:
    """Print one row: the claim's figures on ``store``, ``jobs`` queued over ``keys`` keys."""
    try:
        floor = percentile(timed(lambda: store.get("job00000000"), CLAIMS), 0.5)
        claims = []
        for _ in range(CLAIMS):
            leases: list[Lease] = []
            claims += timed(lambda: claim_once(store, leases), 1)  # noqa: B023
            store.finish(leases[0], DONE)
    finally:
        store.close()
    p50, p99 = percentile(claims, 0.5), percentile(claims, 0.99)
    print(
        f"{name:<9} {jobs:>6} jobs {keys:>4} keys   claim p50 {p50 * 1e3:6.2f} ms"
        f"  p99 {p99 * 1e3:6.2f} ms   p50/get {p50 / floor:5.1f}x  (get {floor * 1e3:.3f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    jobs = parser.parse_args().jobs
    for keys in SPREADS:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "jobs.db"
            SQLiteJobStore(path).close()  # the schema
            fill_sqlite(path, jobs, keys)
            measure("sqlite", SQLiteJobStore(path), jobs, keys)
    server = postgres_server()
    if server is None:
        return
    for keys in SPREADS:
        with throwaway_schema(server) as url:
            fill_postgres(url, jobs, keys)
            measure("postgres", PostgresJobStore(url), jobs, keys)


if __name__ == "__main__":
    main()
