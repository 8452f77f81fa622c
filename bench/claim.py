"""The fair claim's cost with many queued jobs across keys, on SQLite and PostgreSQL.

Run: ``python bench/claim.py [--jobs 3000]`` (about a minute). For each backend and each
spread of ``--jobs`` queued jobs over 1, 30 and 300 keys, it times ``claim`` then ``finish``
of 200 jobs one at a time (one worker: every claim walks every key with queued jobs), and
``get`` of a queued job as the floor (one indexed read, same store, same run). Prints the
claim's p50/p99 in ms and the p50 as a ratio to the floor's. PostgreSQL runs in a schema
this script creates on ``REELFORGE_BENCH_DATABASE_URL`` (default: the local ``test``
database) and drops; it is skipped if unreachable.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dispatch import postgres_server, throwaway_schema
from harness import percentile
from reelforge.jobs.model import Completed, Store
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest

CLAIMS = 200
SPREADS = (1, 30, 300)
DONE = Completed(video_key="v.mp4", credits_used=0.0, meta={})


def timed(action: Callable[[], object], times: int) -> list[float]:
    """Seconds each of ``times`` calls of ``action`` took."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def fill(store: Store, jobs: int, keys: int) -> str:
    """Queue ``jobs`` jobs round robin over ``keys`` keys; the id of the first."""
    request = JobRequest(prompt="bench")
    first = store.create(owner="key-0", model="preview", request=request, max_attempts=1)
    for n in range(1, jobs):
        store.create(owner=f"key-{n % keys}", model="preview", request=request, max_attempts=1)
    return first.id


def claim_and_finish(store: Store) -> None:
    lease = store.claim(worker_id="bench", lease_seconds=60)
    assert lease is not None
    store.finish(lease, DONE)


def measure(name: str, open_store: Callable[[], Store], jobs: int, keys: int) -> None:
    """Print one row: the claim's figures with ``jobs`` queued over ``keys`` keys."""
    store = open_store()
    try:
        probe = fill(store, jobs, keys)
        floor = percentile(timed(lambda: store.get(probe), CLAIMS), 0.5)
        claims = timed(lambda: claim_and_finish(store), CLAIMS)
    finally:
        store.close()
    p50, p99 = percentile(claims, 0.5), percentile(claims, 0.99)
    print(
        f"{name:<9} {jobs:>6} jobs {keys:>4} keys   claim+finish p50 {p50 * 1e3:6.2f} ms"
        f"  p99 {p99 * 1e3:6.2f} ms   p50/get {p50 / floor:5.1f}x  (get {floor * 1e3:.3f} ms)"
    )


@contextmanager
def sqlite_stores() -> Iterator[Callable[[], Store]]:
    with tempfile.TemporaryDirectory() as folder:
        counter = iter(range(1_000_000))
        yield lambda: SQLiteJobStore(Path(folder) / f"jobs{next(counter)}.db")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    jobs = parser.parse_args().jobs
    with sqlite_stores() as opener:
        for keys in SPREADS:
            measure("sqlite", opener, jobs, keys)
    server = postgres_server()
    if server is None:
        return
    for keys in SPREADS:
        with throwaway_schema(server) as url:
            measure("postgres", lambda: PostgresJobStore(url), jobs, keys)


if __name__ == "__main__":
    main()
