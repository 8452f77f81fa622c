"""The cost of admission on the create path: create p50/p99 with no limit configured (the
floor), with every limit configured (rpm, queued, daily video seconds, the service cap: the
usage count in the create's transaction), and with limits plus an ``Idempotency-Key`` (a
reservation before the create), on SQLite and, if reachable, PostgreSQL.

Run: ``python bench/admission.py [creates per setup, default 300]`` (under a minute). Each
setup serves the API (no worker: jobs stay queued) with uvicorn in a thread of this process on
a free loopback port, one temp data directory per backend (PostgreSQL: a throwaway schema on
``REELFORGE_BENCH_DATABASE_URL``, default the local ``test`` database). The setups take turns
in rounds of 50 creates, so that drift (other processes, the growing jobs table) falls on all
alike; one client sends the creates one after another. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from dispatch import postgres_server, throwaway_schema
from harness import ROUTE, free_port, percentile
from reelforge.api.app import Services, create_app
from reelforge.runtime import load_models, open_storage, open_store
from reelforge.settings import Settings
from reelforge.startup import ensure_key

KEY = "rf_bench-admission-key-0123456789abcdef"
BODY = {"model": "minimax/hailuo-02", "prompt": "a fox in snow", "duration": 6}
ROUND = 50
LIMITS: dict[str, Any] = {
    "key_rpm": 10**6,
    "key_max_queued": 10**6,
    "key_daily_video_seconds": 10**9,
    "max_queued": 10**6,
}
SETUPS: dict[str, tuple[dict[str, Any], bool]] = {
    "no limits": ({}, False),
    "limits": (LIMITS, False),
    "limits + Idempotency-Key": (LIMITS, True),
}


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """The API for ``settings`` in a thread; a client with the bench key."""
    store = open_store(settings)
    ensure_key(settings, store)
    app = create_app(Services(settings, store, open_storage(settings), load_models(settings)))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", headers=headers) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def timed_creates(client: httpx.Client, count: int, idempotent: bool) -> list[float]:
    """Seconds each of ``count`` creates took, one after another."""
    took = []
    for _ in range(count):
        headers = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
        start = time.perf_counter()
        answer = client.post(ROUTE, json=BODY, headers=headers)
        took.append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise RuntimeError(f"create answered {answer.status_code}: {answer.text}")
    return took


def backend_rows(name: str, data_dir: Path, database_url: str | None, total: int) -> list[str]:
    """Each setup's p50/p99 on one database, and its ratio to the no-limits floor."""
    samples: dict[str, list[float]] = {setup: [] for setup in SETUPS}
    with ExitStack() as stack:
        clients = {}
        for setup, (limits, _) in SETUPS.items():
            fields: dict[str, Any] = {"data_dir": data_dir, "port": free_port(), "api_key": KEY}
            if database_url is not None:
                fields["database_url"] = database_url
            clients[setup] = stack.enter_context(serving(Settings(**fields, **limits)))
        for client in clients.values():
            timed_creates(client, 10, idempotent=True)  # warm up
        for _ in range(max(1, total // ROUND)):
            for setup, (_, idempotent) in SETUPS.items():
                samples[setup] += timed_creates(clients[setup], ROUND, idempotent)
    floor = samples["no limits"]
    rows = []
    for setup, took in samples.items():
        p50, p99 = percentile(took, 0.5), percentile(took, 0.99)
        ratio50, ratio99 = p50 / percentile(floor, 0.5), p99 / percentile(floor, 0.99)
        rows.append(
            f"{name:<10} {setup:<26} {len(took):>5} {p50 * 1e3:>8.2f} {p99 * 1e3:>8.2f}"
            f" {ratio50:>8.2f}x {ratio99:>8.2f}x"
        )
    return rows


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(
        f"{'backend':<10} {'setup':<26} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'p50/floor':>9}"
        f" {'p99/floor':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="rf-bench-admission-") as scratch:
        for row in backend_rows("sqlite", Path(scratch) / "sqlite", None, total):
            print(row, flush=True)
        server_url = postgres_server()
        if server_url is not None:
            with throwaway_schema(server_url) as url:
                for row in backend_rows("postgres", Path(scratch) / "pg", url, total):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
