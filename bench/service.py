"""Service speed: create and poll throughput/latency under 50 concurrent clients, the poll's
server CPU against a floor measured in the same run, and the delay from a create's answer to
``generating`` on an idle worker.

Run: ``python bench/service.py`` (a few minutes), or ``python bench/service.py --only poll``
(under a minute: the poll against its floor, one API process). Each phase starts its own
server in a subprocess (so the load generator does not share the server's GIL) on a free
loopback port with a temp data directory, and stops it at the end. Only 127.0.0.1 is
contacted; every loop is bounded in count and time.

The floor is ``bench/floor_app.py``: a bare Starlette app answering the poll's path with a
constant completed-poll answer once it has seen an Authorization header, served by
``python -m uvicorn`` with the settings ``reelforge serve`` gives uvicorn, loaded by the same
client with the same counts. Reelforge's server CPU per poll is printed as a multiple of the
floor's, which cancels most of this machine's noise (2 cores shared with other work).

The load generator is one asyncio loop in this process (``closed_loop``, 50 tasks, keep-alive
connections). On this 2-core machine it competes with the server for the CPU, so both
processes' CPU time per request is printed beside the figures. The headline rows use a bare
HTTP/1.1 client (~0.06 ms a request); the httpx rows show what a typical Python client sees
(``httpx.AsyncClient`` spends 2-5 ms of CPU a request, more than the server does).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from closed_loop import HEADERS, KEY, Call, Load, Server, load
from harness import ROUTE, free_port, percentile, status_of, stop, wait_end
from reelforge.settings import Settings

BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk [Truck left, Zoom in]"}

CLIENTS = 50
CREATES = 1000
POLLS = 5000
SOLO_POLLS = 500
WARMUP = 100
FINISHED_JOBS = 20
"""Jobs run to completion before the create phase, for the poll of completed jobs."""
POLL_ROUNDS = 3
"""Rounds of each poll phase, reelforge's and the floor's taking turns."""
CLAIM_SAMPLES = 20
POLL_TARGET_MS = 20.0
POLL_FLOOR_TARGET = 2.5
"""Most server CPU per poll, as a multiple of the floor's."""
TIGHT_POLL_GAP_S = 0.002
JOB_DEADLINE_S = 60.0
START_DEADLINE_S = 30.0
DEFAULT_POLL_SECONDS: float = Settings.model_fields["poll_seconds"].default
BENCH_DIR = Path(__file__).resolve().parent
UVICORN_OPTIONS = [
    "--host",
    "127.0.0.1",
    "--log-level",
    "info",
    "--no-access-log",
    "--no-server-header",
]
"""What ``reelforge serve`` (one API process, no --access-log) passes ``uvicorn.run`` beside
its app: loop and HTTP parser left to uvicorn's ``auto`` (uvloop and httptools if installed),
no ``Server`` header. The floor keeps uvicorn's own httptools protocol: the read deadline of
``api.serving`` is counted in reelforge's cost."""


def service_env(directory: Path, port: int) -> dict[str, str]:
    """This process's environment without ``REELFORGE_*``, plus a server's settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        REELFORGE_DATA_DIR=str(directory / "data"),
        REELFORGE_HOST="127.0.0.1",
        REELFORGE_PORT=str(port),
        REELFORGE_API_KEY=KEY,
        REELFORGE_X264_PRESET="ultrafast",
        REELFORGE_DRAIN_SECONDS="5",
    )
    return env


@contextmanager
def started(command: list[str], env: dict[str, str], directory: Path) -> Iterator[Server]:
    """``command`` serving on ``REELFORGE_PORT``, until the block ends."""
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: workers are reachable if it hangs
        )
        try:
            base_url = f"http://127.0.0.1:{env['REELFORGE_PORT']}"
            server = Server(base_url, process, directory / "data", env)
            wait_ready(server, log_path)
            yield server
        finally:
            stop(process, 30)


@contextmanager
def serve(
    workers: int, poll_seconds: float | None = None, api_processes: int = 1
) -> Iterator[Server]:
    """``python -m reelforge serve`` on a free port and a temp data dir, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-") as name:
        env = service_env(Path(name), free_port())
        if poll_seconds is not None:
            env["REELFORGE_POLL_SECONDS"] = str(poll_seconds)
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", str(workers)]
        command += ["--api-processes", str(api_processes)]
        with started(command, env, Path(name)) as server:
            yield server


@contextmanager
def serve_floor() -> Iterator[Server]:
    """``bench/floor_app.py`` under ``python -m uvicorn``, as ``reelforge serve`` runs uvicorn."""
    with tempfile.TemporaryDirectory(prefix="reelforge-floor-") as name:
        env = service_env(Path(name), free_port())
        command = [sys.executable, "-m", "uvicorn", "floor_app:create_app", "--factory"]
        command += ["--app-dir", str(BENCH_DIR), "--port", env["REELFORGE_PORT"]]
        with started(command + UVICORN_OPTIONS, env, Path(name)) as server:
            yield server


def wait_ready(server: Server, log_path: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the server did not start; its log ends:\n{tail}")


def finish_jobs(server: Server, count: int) -> list[str]:
    """Create ``count`` generations and run them to completion with a ``reelforge worker``
    of their own (small videos), stopped before this returns; their ids."""
    env = {**server.env, "REELFORGE_PREVIEW_SCALE": "0.25"}
    with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=30) as client:
        ids = [client.post(ROUTE, json=BODY).raise_for_status().json()["generation_id"]]
        ids += [
            client.post(ROUTE, json=BODY).raise_for_status().json()["generation_id"]
            for _ in range(count - 1)
        ]
        worker = subprocess.Popen(
            [sys.executable, "-m", "reelforge", "worker"],
            env=env,
            cwd=server.data_dir.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            for generation_id in ids:
                wait_end(client, generation_id, deadline_s=JOB_DEADLINE_S, pause_s=0.05)
        finally:
            stop(worker, 30)
    return ids


CREATE_BODY = json.dumps(BODY).encode()


def create(_: int) -> tuple[str, str, bytes]:
    return "POST", ROUTE, CREATE_BODY


def poller(ids: list[str]) -> Call:
    def call(index: int) -> tuple[str, str, bytes]:
        return "GET", f"{ROUTE}?generation_id={ids[index % len(ids)]}", b""

    return call


@dataclass(frozen=True)
class Row:
    """One load phase as a table row: its rounds (most phases have one)."""

    name: str
    kind: str
    clients: int
    runs: tuple[Load, ...]

    @property
    def run(self) -> Load:
        """The first round, the one the load table shows."""
        return self.runs[0]

    @property
    def least_server_ms(self) -> float:
        """Server CPU ms per request of the cheapest round (others' noise only adds)."""
        return min(run.server_ms for run in self.runs)


def poll_rows(server: Server, floor: Server, queued: list[str], finished: list[str]) -> list[Row]:
    """Reelforge's poll phases and the floor's, each ``POLL_ROUNDS`` times, taking turns, so
    that both see the machine in the same state."""
    floor_call = poller(["0" * 32])
    phases = [
        ("floor: bare Starlette", floor, floor_call, CLIENTS, POLLS),
        ("floor: bare Starlette", floor, floor_call, 1, SOLO_POLLS),
        ("poll", server, poller(queued), CLIENTS, POLLS),
        ("poll", server, poller(queued), 1, SOLO_POLLS),
        ("poll, completed", server, poller(finished), CLIENTS, POLLS),
    ]
    for _, target, call, _, _ in phases:
        load(target, WARMUP, CLIENTS, call)
    runs: list[list[Load]] = [[] for _ in phases]
    for _ in range(POLL_ROUNDS):
        for (_, target, call, clients, count), done in zip(phases, runs, strict=True):
            done.append(load(target, count, clients, call))
    return [
        Row(name, "raw", clients, tuple(done))
        for (name, _, _, clients, _), done in zip(phases, runs, strict=True)
    ]


def api_rows(*, only_poll: bool = False) -> list[Row]:
    """Create, then poll, against an API with no workers (jobs just queue; a few were run to
    completion first) and the floor; with ``only_poll``, no httpx rows and no second API
    process."""
    rows = []
    with serve(workers=0) as server, serve_floor() as floor:
        finished = finish_jobs(server, FINISHED_JOBS)
        load(server, WARMUP, CLIENTS, create)
        creates = load(server, CREATES, CLIENTS, create)
        ids = [answer["generation_id"] for answer in creates.answers]
        assert all(answer["status"] == "queued" for answer in creates.answers)
        rows.append(Row("create", "raw", CLIENTS, (creates,)))
        if not only_poll:
            httpx_creates = load(server, CREATES, CLIENTS, create, "httpx")
            rows.append(Row("create", "httpx", CLIENTS, (httpx_creates,)))
        rows += poll_rows(server, floor, ids, finished)
        if not only_poll:
            httpx_polls = load(server, POLLS, CLIENTS, poller(ids), "httpx")
            rows.append(Row("poll", "httpx", CLIENTS, (httpx_polls,)))
    if only_poll:
        return rows
    with serve(workers=0, api_processes=2) as server:
        load(server, WARMUP, CLIENTS, create)
        pair_creates = load(server, CREATES, CLIENTS, create)
        pair_ids = [answer["generation_id"] for answer in pair_creates.answers]
        load(server, WARMUP, CLIENTS, poller(pair_ids))
        pair_polls = load(server, POLLS, CLIENTS, poller(pair_ids))
    rows.append(Row("create, 2 API procs", "raw", CLIENTS, (pair_creates,)))
    rows.append(Row("poll, 2 API procs", "raw", CLIENTS, (pair_polls,)))
    return rows


@dataclass
class Claim:
    """One create → ``generating``: bounds seen by the client and the server's own lag."""

    upper_ms: float  # answer of the first poll saying generating, from the create's answer
    lower_ms: float  # sending of the last poll saying queued, from the create's answer
    polls: int
    server_ms: float = 0.0  # started_at - created_at, from the job database


def one_claim(client: httpx.Client) -> tuple[str, Claim]:
    response = client.post(ROUTE, json=BODY)
    answered = time.perf_counter()
    response.raise_for_status()
    generation_id: str = response.json()["generation_id"]
    last_queued = answered
    polls = 0
    while True:
        if time.perf_counter() - answered > JOB_DEADLINE_S:
            raise RuntimeError(f"generation {generation_id} was not claimed in time")
        sent = time.perf_counter()
        status = status_of(client, generation_id)
        seen = time.perf_counter()
        polls += 1
        if status != "queued":
            claim = Claim((seen - answered) * 1000, (last_queued - answered) * 1000, polls)
            return generation_id, claim
        last_queued = sent
        time.sleep(TIGHT_POLL_GAP_S)


def claim_delays(poll_seconds: float | None) -> list[Claim]:
    """``CLAIM_SAMPLES`` creates on an idle single worker, each run to completion."""
    interval = DEFAULT_POLL_SECONDS if poll_seconds is None else poll_seconds
    rng = random.Random(7)
    claims: dict[str, Claim] = {}
    with (
        serve(workers=1, poll_seconds=poll_seconds) as server,
        httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=30) as client,
    ):
        # A first generation to completion: the worker is up, warm, and idle afterwards.
        warm = client.post(ROUTE, json=BODY)
        warm.raise_for_status()
        wait_end(client, warm.json()["generation_id"], deadline_s=JOB_DEADLINE_S, pause_s=0.05)
        for _ in range(CLAIM_SAMPLES):
            # A random phase against the worker's idle cycle (which restarts at each job's end).
            time.sleep(0.05 + rng.uniform(0, interval))
            generation_id, claim = one_claim(client)
            claims[generation_id] = claim
            wait_end(client, generation_id, deadline_s=JOB_DEADLINE_S, pause_s=0.05)
        database = server.data_dir / "reelforge.sqlite3"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            for generation_id, started_at, created_at in conn.execute(
                "SELECT id, started_at, created_at FROM jobs"
            ):
                if generation_id in claims:
                    claims[generation_id].server_ms = (started_at - created_at) * 1000
    return list(claims.values())


def print_load_table(rows: list[Row]) -> None:
    print(
        f"{'phase, --workers 0':22} {'client':>6} {'requests':>8} {'conc':>4} {'req/s':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'server CPU/req':>14} {'client CPU/req':>14}"
    )
    for row in sorted(rows, key=lambda row: row.kind != "raw"):
        run, count = row.run, len(row.run.latencies_ms)
        p50, p99 = percentile(run.latencies_ms, 0.5), percentile(run.latencies_ms, 0.99)
        client_ms = run.client_cpu_s / count * 1000
        print(
            f"{row.name:22} {row.kind:>6} {count:8d} {row.clients:4d} {run.rate:6.0f} {p50:7.1f}"
            f" {p99:7.1f} {run.server_ms:11.3f} ms {client_ms:11.3f} ms"
        )
    print(
        "(raw: a bare keep-alive HTTP/1.1 client on asyncio streams, cheap enough that the server"
        " is the\n bottleneck; httpx: httpx.AsyncClient, whose CPU cost per request makes this"
        " process the bottleneck.\n CPU columns: CPU time per request of the server process and"
        " of this load generator.)"
    )


def print_floor_table(rows: list[Row]) -> None:
    """Reelforge's server CPU per poll as a multiple of the floor's, with the target."""
    by_name = {(row.name, row.clients): row for row in rows if row.kind == "raw"}
    floor = by_name[("floor: bare Starlette", CLIENTS)].least_server_ms
    poll = by_name[("poll", CLIENTS)].least_server_ms
    ratio = poll / floor
    print(
        f"poll: {poll:.3f} ms CPU/req = {ratio:.1f}x the bare-Starlette floor ({floor:.3f} ms);"
        f" target <= {POLL_FLOOR_TARGET:g}x: {'met' if ratio <= POLL_FLOOR_TARGET else 'NOT met'}"
    )
    print(
        f"{'server CPU per poll, 1 API process':36} {'conc':>4} {'reelforge':>10} {'floor':>9}"
        f" {'ratio':>6}  target <= {POLL_FLOOR_TARGET:g}x"
    )
    for label, name, clients in (
        ("queued job", "poll", CLIENTS),
        ("completed job (signed video URL)", "poll, completed", CLIENTS),
        ("queued job", "poll", 1),
    ):
        run = by_name[(name, clients)].least_server_ms
        base = by_name[("floor: bare Starlette", clients)].least_server_ms
        verdict = "met" if run / base <= POLL_FLOOR_TARGET else "NOT met"
        print(f"{label:36} {clients:4d} {run:7.3f} ms {base:6.3f} ms {run / base:5.1f}x  {verdict}")
    print(
        "(floor: bench/floor_app.py, a bare Starlette app that checks for an Authorization header"
        " and answers a\n constant 536-byte completed poll; same uvicorn settings, client and"
        f" counts. Each figure is the least\n of {POLL_ROUNDS} rounds, reelforge's and the"
        " floor's taking turns (the load table shows the first).)"
    )


def print_poll_targets(rows: list[Row]) -> None:
    for row in rows:
        if row.kind != "raw" or not row.name.startswith("poll"):
            continue
        p99 = percentile(row.run.latencies_ms, 0.99)
        setup = "2 API processes" if "2 API" in row.name else "1 API process"
        verdict = "met" if p99 < POLL_TARGET_MS else "NOT met"
        print(
            f"target poll p99 < {POLL_TARGET_MS:.0f} ms, {row.name.split(',')[0]}"
            f"{', completed' if 'completed' in row.name else ''}, {setup},"
            f" {row.clients} client(s), raw: {verdict} ({p99:.1f} ms)"
        )


def print_claim_delays() -> None:
    print(
        f"create answered -> 'generating' on an idle worker (--workers 1, {CLAIM_SAMPLES} samples"
        f" each, client polls every ~{TIGHT_POLL_GAP_S * 1000:.0f} ms + a round trip)"
    )
    print(
        f"{'REELFORGE_POLL_SECONDS':24} {'p50 ms':>7} {'p99 ms':>7} {'min ms':>7}"
        f" {'resolution':>10} {'server p50':>10} {'server p99':>10}"
    )
    for setting in (None, 0.05):
        claims = claim_delays(setting)
        label = f"{DEFAULT_POLL_SECONDS:g} (default)" if setting is None else f"{setting:g}"
        upper = [claim.upper_ms for claim in claims]
        gaps = [claim.upper_ms - claim.lower_ms for claim in claims]
        server = [claim.server_ms for claim in claims]
        print(
            f"{label:24} {percentile(upper, 0.5):7.1f} {percentile(upper, 0.99):7.1f}"
            f" {min(upper):7.1f} {percentile(gaps, 0.5):7.1f} ms {percentile(server, 0.5):7.1f} ms"
            f" {percentile(server, 0.99):7.1f} ms"
        )
    print(
        "(p50/p99/min: from the create's answer to the first poll answer saying 'generating'; "
        "resolution: median\n width of the window the change fell in (last 'queued' poll sent"
        " .. first 'generating' answer);\n server: started_at - created_at in the job database;"
        " p99 of 20 samples is their maximum. The\n worker claims every REELFORGE_POLL_SECONDS"
        " when idle, so the delay is spread over 0..that interval.)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", choices=["poll"], help="poll: only the poll against its floor (under a minute)"
    )
    only_poll = parser.parse_args().only == "poll"
    began = time.perf_counter()
    print(f"reelforge service benchmark: {os.cpu_count()} cores, loopback, `reelforge serve`")
    print("(server in a subprocess; load from one asyncio loop here, keep-alive connections)")
    print()
    rows = api_rows(only_poll=only_poll)
    print_load_table(rows)
    print()
    print_floor_table(rows)
    print()
    print_poll_targets(rows)
    if not only_poll:
        print()
        print_claim_delays()
    print()
    print(f"total runtime: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
