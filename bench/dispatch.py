"""Dispatch latency: from a create's answer to ``generating``, with an idle worker pool, on
SQLite (idle workers poll every ``REELFORGE_POLL_SECONDS``) and on PostgreSQL (the API's
``NOTIFY`` wakes them through ``LISTEN``; polling at the default interval is the fallback).

Run: ``python bench/dispatch.py`` (about a minute). Each setup starts its own
``python -m reelforge serve --workers 2`` in a subprocess on a free loopback port and a temp
data directory; the PostgreSQL setup uses a schema this script creates on
``REELFORGE_BENCH_DATABASE_URL`` (default: the local ``test`` database) with
``reelforge.jobs.migrate.upgrade`` and drops at the end. Everything is stopped and removed
on exit, Ctrl-C and SIGTERM included. Only 127.0.0.1 is contacted; every loop is bounded.

Each sample creates one generation after a random pause (so it lands at a random phase of
the workers' idle cycle), then polls it every ~2 ms until it leaves ``queued``, then waits
for it to finish before the next one, so the pool is idle at every create. Two views:

- client: from the create's answer to the first poll answer saying ``generating`` (an
  upper bound: the change happened within the last poll's round trip and gap);
- server: ``started_at - created_at`` of the job row, both stamped with ``time.time()`` on
  this machine (the API's create, the worker's claim).

Videos are rendered at ``REELFORGE_PREVIEW_SCALE=0.1`` (136x76, ~20 ms a job).
"""

from __future__ import annotations

import math
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from harness import ROUTE, free_port, percentile, status_of, stop, wait_end
from reelforge.jobs.migrate import upgrade
from reelforge.settings import Settings

KEY = "rf_bench-key-for-the-dispatch-benchmark-01"
HEADERS = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk [Pan right]"}
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"

WORKERS = 2
SAMPLES = 50
TARGET_P99_MS = 100.0
CLIENT_POLL_GAP_S = 0.002
PHASE_FLOOR_S = 0.05
"""Pause before each create: this plus a random share of the poll interval, seconds."""
START_S = 30.0
JOB_S = 30.0
STOP_S = 15.0
DEFAULT_POLL_SECONDS: float = Settings.model_fields["poll_seconds"].default


@dataclass(frozen=True)
class Setup:
    store: str
    wake: str
    poll_seconds: float | None
    """``REELFORGE_POLL_SECONDS``; None keeps the default."""
    database_url: str | None = None


@dataclass
class Sample:
    client_ms: float
    """Create answered → first poll answer saying ``generating``."""
    window_ms: float
    """Width of the interval the change fell in: last ``queued`` poll sent → that answer."""
    server_ms: float = math.nan
    """``started_at - created_at`` of the job row."""


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path


@contextmanager
def throwaway_schema(server_url: str) -> Iterator[str]:
    """A fresh, migrated schema on ``server_url``; yields a conninfo using it; drops it."""
    name = f"rf_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        url = make_conninfo(server_url, options=f"-c search_path={name}")
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@contextmanager
def serve(setup: Setup) -> Iterator[Server]:
    """``reelforge serve --workers 2`` for ``setup``, ready and idle, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="reelforge-dispatch-") as directory:
        port = free_port()
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")
        }
        env.update(
            REELFORGE_DATA_DIR=str(Path(directory) / "data"),
            REELFORGE_API_KEY=KEY,
            REELFORGE_PREVIEW_SCALE="0.1",
            REELFORGE_X264_PRESET="ultrafast",
            REELFORGE_DRAIN_SECONDS="5",
        )
        if setup.poll_seconds is not None:
            env["REELFORGE_POLL_SECONDS"] = str(setup.poll_seconds)
        if setup.database_url is not None:
            env["REELFORGE_DATABASE_URL"] = setup.database_url
        log = Path(directory) / "server.log"
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", str(WORKERS)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                env=env,
                cwd=directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its workers are reachable if it hangs
            )
        server = Server(f"http://127.0.0.1:{port}", process, Path(directory) / "data", log)
        try:
            wait_ready(server)
            yield server
        finally:
            stop(process, STOP_S)


def wait_ready(server: Server) -> None:
    """Until the API answers and every worker has logged that it is ready."""
    deadline = time.monotonic() + START_S
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline and server.process.poll() is None:
            ready = server.log.read_text(errors="replace").count("threads) ready for")
            try:
                if ready >= WORKERS and client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    tail = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the server did not start; its log ends:\n{tail}")


def create(client: httpx.Client) -> str:
    response = client.post(ROUTE, json=BODY)
    response.raise_for_status()
    generation_id: str = response.json()["generation_id"]
    return generation_id


def dispatch(client: httpx.Client) -> tuple[str, Sample]:
    """Create a generation and poll it until it leaves ``queued``."""
    generation_id = create(client)
    answered = last_queued = time.perf_counter()
    while time.perf_counter() - answered < JOB_S:
        sent = time.perf_counter()
        status = status_of(client, generation_id)
        seen = time.perf_counter()
        if status != "queued":
            return generation_id, Sample((seen - answered) * 1000, (seen - last_queued) * 1000)
        last_queued = sent
        time.sleep(CLIENT_POLL_GAP_S)
    raise RuntimeError(f"generation {generation_id} was not claimed within {JOB_S} s")


def job_delays(server: Server, setup: Setup, ids: list[str]) -> dict[str, float]:
    """``started_at - created_at`` of each job in ``ids``, in milliseconds."""
    query = "SELECT id, started_at - created_at FROM jobs WHERE started_at IS NOT NULL"
    if setup.database_url is not None:
        with psycopg.connect(setup.database_url) as conn:
            rows = conn.execute(query).fetchall()
    else:
        database = server.data_dir / "reelforge.sqlite3"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            rows = conn.execute(query).fetchall()
    return {job_id: delay * 1000 for job_id, delay in rows if job_id in ids}


def measure(setup: Setup) -> list[Sample]:
    """``SAMPLES`` dispatches on an idle pool, each generation finished before the next."""
    interval = DEFAULT_POLL_SECONDS if setup.poll_seconds is None else setup.poll_seconds
    rng = random.Random(7)
    samples: dict[str, Sample] = {}
    with (
        serve(setup) as server,
        httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=30) as client,
    ):
        wait_end(
            client, create(client), deadline_s=JOB_S, pause_s=0.02
        )  # warm: the first job loads what the next need
        for _ in range(SAMPLES):
            time.sleep(PHASE_FLOOR_S + rng.uniform(0, interval))
            generation_id, sample = dispatch(client)
            samples[generation_id] = sample
            wait_end(client, generation_id, deadline_s=JOB_S, pause_s=0.02)
        for generation_id, delay in job_delays(server, setup, list(samples)).items():
            samples[generation_id].server_ms = delay
    return list(samples.values())


def row(setup: Setup, samples: list[Sample]) -> str:
    client = [sample.client_ms for sample in samples]
    server = [sample.server_ms for sample in samples]
    window = [sample.window_ms for sample in samples]
    return (
        f"{setup.store:11} {setup.wake:30} {percentile(client, 0.5):7.1f} "
        f"{percentile(client, 0.99):7.1f} {percentile(server, 0.5):7.1f} "
        f"{percentile(server, 0.99):7.1f} {percentile(window, 0.5):7.1f}"
    )


def postgres_server() -> str | None:
    """The PostgreSQL server to use, or None (with the reason printed) if unreachable."""
    url = os.environ.get("REELFORGE_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL unreachable ({str(exc).strip().splitlines()[0]}): its row is skipped")
        return None
    return url


def main() -> None:
    def terminate(signum: int, _: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds: servers stopped, dirs and schema removed

    signal.signal(signal.SIGTERM, terminate)
    began = time.perf_counter()
    print(
        f"reelforge dispatch latency: create answered -> 'generating', {WORKERS} idle workers "
        f"(`reelforge serve --workers {WORKERS}`), {SAMPLES} samples each, {os.cpu_count()} cores"
    )
    print(
        f"{'store':11} {'wake-up':30} {'client':>7} {'client':>7} {'server':>7} {'server':>7}"
        f" {'window':>7}"
    )
    print(f"{'':42} {'p50 ms':>7} {'p99 ms':>7} {'p50 ms':>7} {'p99 ms':>7} {'p50 ms':>7}")
    default = f"{DEFAULT_POLL_SECONDS:g} s"
    for setup in (
        Setup("SQLite", f"poll {default} (default)", None),
        Setup("SQLite", "poll 0.05 s", 0.05),
    ):
        print(row(setup, measure(setup)), flush=True)
    verdict = "not measured"
    server_url = postgres_server()
    if server_url is not None:
        with throwaway_schema(server_url) as url:
            setup = Setup("PostgreSQL", f"LISTEN/NOTIFY, poll {default}", None, url)
            samples = measure(setup)
        print(row(setup, samples))
        p99s = [
            percentile([sample.client_ms for sample in samples], 0.99),
            percentile([sample.server_ms for sample in samples], 0.99),
        ]
        met = "met" if max(p99s) < TARGET_P99_MS else "NOT met"
        verdict = f"{met} (client p99 {p99s[0]:.1f} ms, server p99 {p99s[1]:.1f} ms)"
    print(
        "(client: create's answer -> first poll answer saying 'generating', polls every "
        f"~{CLIENT_POLL_GAP_S * 1000:.0f} ms + a round trip;\n server: started_at - created_at "
        "in the job row; window: last 'queued' poll sent -> that answer, the\n client view's "
        f"resolution. p99 of {SAMPLES} samples is their maximum.)"
    )
    print(f"target: p99 < {TARGET_P99_MS:.0f} ms on PostgreSQL, client and server: {verdict}")
    print(f"total runtime: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
