"""Service speed: create and poll throughput/latency under 50 concurrent clients, and the
delay from a create's answer to ``generating`` on an idle worker.

Run: ``python bench/service.py``. Each phase starts its own ``python -m reelforge serve``
in a subprocess (so the load generator does not share the server's GIL) on a free loopback
port with a temp data directory, and stops it at the end. Only 127.0.0.1 is contacted; every
loop is bounded in count and time.

The load generator is one asyncio loop in this process (50 tasks, keep-alive connections). On
this 2-core machine it competes with the server for the CPU, so both processes' CPU time per
request is printed beside the figures. ``httpx.AsyncClient`` spends 2-5 ms of CPU per request
at 50 connections (most of it in httpcore's pool, which checks every connection on every
request), more than the server does, so with it the figures measure httpx; the headline rows
use a bare HTTP/1.1 client on asyncio streams (~0.06 ms a request) instead, and the httpx rows
are kept to show what a typical Python client sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness import ROUTE, free_port, percentile, status_of, stop, wait_end
from reelforge.settings import Settings

KEY = "rf_bench-key-for-the-service-benchmark-0123"
HEADERS = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk [Truck left, Zoom in]"}

CLIENTS = 50
CREATES = 1000
POLLS = 5000
SOLO_POLLS = 500
WARMUP = 100
CLAIM_SAMPLES = 20
POLL_TARGET_MS = 20.0
TIGHT_POLL_GAP_S = 0.002
PHASE_DEADLINE_S = 60.0
JOB_DEADLINE_S = 60.0
START_DEADLINE_S = 30.0
DEFAULT_POLL_SECONDS: float = Settings.model_fields["poll_seconds"].default


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server process and all its live descendants (API
        and worker processes) plus their waited-for children."""
        ticks, pending = 0, [self.process.pid]
        while pending:
            pid = pending.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except FileNotFoundError:
                continue
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            pending.extend(int(child) for child in children)
        return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Load:
    """One load phase: latencies (ms) of every request, wall and CPU seconds, answers."""

    latencies_ms: list[float]
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    answers: list[dict[str, Any]]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


@contextmanager
def serve(
    workers: int, poll_seconds: float | None = None, api_processes: int = 1
) -> Iterator[Server]:
    """``python -m reelforge serve`` on a free port and a temp data dir, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-") as directory:
        port = free_port()
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")
        }
        env.update(
            REELFORGE_DATA_DIR=str(Path(directory) / "data"),
            REELFORGE_HOST="127.0.0.1",
            REELFORGE_PORT=str(port),
            REELFORGE_API_KEY=KEY,
            REELFORGE_X264_PRESET="ultrafast",
            REELFORGE_DRAIN_SECONDS="5",
        )
        if poll_seconds is not None:
            env["REELFORGE_POLL_SECONDS"] = str(poll_seconds)
        log_path = Path(directory) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reelforge",
                    "serve",
                    "--workers",
                    str(workers),
                    "--api-processes",
                    str(api_processes),
                ],
                env=env,
                cwd=directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: workers are reachable if it hangs
            )
            try:
                server = Server(f"http://127.0.0.1:{port}", process, Path(directory) / "data")
                wait_ready(server, log_path)
                yield server
            finally:
                stop(process, 30)


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


Call = Callable[[int], tuple[str, str, bytes]]
"""Request number → (method, target, JSON body or b"")."""
Sender = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]


class RawConnection:
    """A bare HTTP/1.1 keep-alive connection: one request at a time, answers read by their
    Content-Length. It costs the load generator ~0.06 ms of CPU a request (httpx: 2-5 ms)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int):
        self.reader, self.writer = reader, writer
        self.head = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def send(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        head = f"{method} {target} HTTP/1.1\r\n{self.head}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return status, await self.reader.readexactly(int(value))
        raise RuntimeError(f"an answer without Content-Length: {lines[0]!r}")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _load(server: Server, total: int, clients: int, call: Call, kind: str) -> Load:
    latencies: list[float] = [0.0] * total
    answers: list[dict[str, Any]] = [{} for _ in range(total)]
    next_index = 0

    async def one_client(send: Sender) -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            method, target, body = call(index)
            started = time.perf_counter()
            status, answer = await send(method, target, body)
            latencies[index] = (time.perf_counter() - started) * 1000
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
            if method == "POST":
                answers[index] = json.loads(answer)

    async with AsyncExitStack() as stack:
        # Connections are opened before the clock starts.
        if kind == "httpx":
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base_url, headers=HEADERS, limits=limits, timeout=30
                )
            )
            await asyncio.gather(*(client.get("/healthz") for _ in range(clients)))

            async def via_httpx(method: str, target: str, body: bytes) -> tuple[int, bytes]:
                headers = {"Content-Type": "application/json"} if body else None
                response = await client.request(method, target, content=body, headers=headers)
                return response.status_code, response.content

            senders: list[Sender] = [via_httpx] * clients
        else:
            port = int(server.base_url.rsplit(":", 1)[1])
            connections = [await RawConnection.open(port) for _ in range(clients)]
            for connection in connections:
                stack.push_async_callback(connection.close)
            senders = [connection.send for connection in connections]
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        async with asyncio.timeout(PHASE_DEADLINE_S):
            await asyncio.gather(*(one_client(send) for send in senders))
        seconds = time.perf_counter() - started
        server_cpu = server.cpu_seconds() - server_cpu
        client_cpu = time.process_time() - client_cpu
    return Load(latencies, seconds, server_cpu, client_cpu, answers)


def load(server: Server, total: int, clients: int, call: Call, kind: str = "raw") -> Load:
    return asyncio.run(_load(server, total, clients, call, kind))


CREATE_BODY = json.dumps(BODY).encode()


def create(_: int) -> tuple[str, str, bytes]:
    return "POST", ROUTE, CREATE_BODY


def poller(ids: list[str]) -> Call:
    def call(index: int) -> tuple[str, str, bytes]:
        return "GET", f"{ROUTE}?generation_id={ids[index % len(ids)]}", b""

    return call


Row = tuple[str, str, int, Load]


def api_rows() -> list[Row]:
    """Create, then poll, against an API with no workers (jobs just queue)."""
    with serve(workers=0) as server:
        load(server, WARMUP, CLIENTS, create)
        creates = load(server, CREATES, CLIENTS, create)
        ids = [answer["generation_id"] for answer in creates.answers]
        assert all(answer["status"] == "queued" for answer in creates.answers)
        httpx_creates = load(server, CREATES, CLIENTS, create, "httpx")
        load(server, WARMUP, CLIENTS, poller(ids))
        polls = load(server, POLLS, CLIENTS, poller(ids))
        solo = load(server, SOLO_POLLS, 1, poller(ids))
        httpx_polls = load(server, POLLS, CLIENTS, poller(ids), "httpx")
    with serve(workers=0, api_processes=2) as server:
        load(server, WARMUP, CLIENTS, create)
        pair_creates = load(server, CREATES, CLIENTS, create)
        pair_ids = [answer["generation_id"] for answer in pair_creates.answers]
        load(server, WARMUP, CLIENTS, poller(pair_ids))
        pair_polls = load(server, POLLS, CLIENTS, poller(pair_ids))
    return [
        ("create", "raw", CLIENTS, creates),
        ("poll", "raw", CLIENTS, polls),
        ("poll", "raw", 1, solo),
        ("create, 2 API procs", "raw", CLIENTS, pair_creates),
        ("poll, 2 API procs", "raw", CLIENTS, pair_polls),
        ("create", "httpx", CLIENTS, httpx_creates),
        ("poll", "httpx", CLIENTS, httpx_polls),
    ]


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


def main() -> None:
    began = time.perf_counter()
    print(f"reelforge service benchmark: {os.cpu_count()} cores, loopback, `reelforge serve`")
    print("(server in a subprocess; load from one asyncio loop here, keep-alive connections)")
    print()
    rows = api_rows()
    polls, solo, pair_polls = rows[1][3], rows[2][3], rows[4][3]
    print(
        f"{'API, --workers 0':20} {'client':>6} {'requests':>8} {'conc':>4} {'req/s':>6}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'server CPU/req':>14} {'client CPU/req':>14}"
    )
    for name, kind, clients, run in rows:
        count = len(run.latencies_ms)
        p50, p99 = percentile(run.latencies_ms, 0.5), percentile(run.latencies_ms, 0.99)
        server_ms, client_ms = run.server_cpu_s / count * 1000, run.client_cpu_s / count * 1000
        print(
            f"{name:20} {kind:>6} {count:8d} {clients:4d} {run.rate:6.0f} {p50:7.1f} {p99:7.1f}"
            f" {server_ms:11.2f} ms {client_ms:11.2f} ms"
        )
    print(
        "(raw: a bare keep-alive HTTP/1.1 client on asyncio streams, cheap enough that the server"
        " is the\n bottleneck; httpx: httpx.AsyncClient, whose CPU cost per request makes this"
        " process the bottleneck.\n CPU columns: CPU time per request of the server process and"
        " of this load generator.)"
    )
    for setup, clients, run in (
        ("1 API process", CLIENTS, polls),
        ("1 API process", 1, solo),
        ("2 API processes", CLIENTS, pair_polls),
    ):
        p99 = percentile(run.latencies_ms, 0.99)
        verdict = "met" if p99 < POLL_TARGET_MS else "NOT met"
        print(
            f"target poll p99 < {POLL_TARGET_MS:.0f} ms, {setup}, {clients} client(s), raw:"
            f" {verdict} ({p99:.1f} ms)"
        )
    print()
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
    print()
    print(f"total runtime: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
