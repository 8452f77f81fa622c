"""Closed-loop load on a server in another process: N clients, each sending its next request
when the answer to the last one is in, and the CPU time both sides spent.

The raw client is a bare HTTP/1.1 keep-alive connection on asyncio streams (~0.06 ms of CPU a
request); the httpx client is ``httpx.AsyncClient`` (2-5 ms a request at 50 connections, most
of it in httpcore's pool), kept to show what a typical Python client sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

KEY = "rf_bench-key-for-the-service-benchmark-0123"
"""The key every request carries (a server under load registers it)."""
HEADERS = {"Authorization": f"Bearer {KEY}"}
PHASE_DEADLINE_S = 60.0


@dataclass
class Server:
    """A server under load, in its own process (group)."""

    base_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]
    """The environment it was started with (``REELFORGE_*``)."""

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server process and all its live descendants (API
        and worker processes, each read to the nanosecond through its CPU clock, ended threads
        included) plus their waited-for children (in clock ticks)."""
        seconds, pending = 0.0, [self.process.pid]
        while pending:
            pid = pending.pop()
            try:
                seconds += time.clock_gettime(process_cpu_clock(pid))
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:  # it has just ended
                continue
            seconds += sum(int(value) for value in fields[13:15]) / os.sysconf("SC_CLK_TCK")
            pending.extend(int(child) for child in children)
        return seconds


def process_cpu_clock(pid: int) -> int:
    """Linux's clock id of process ``pid``'s CPU time (``clock_getcpuclockid``, which Python
    does not wrap): ``CPUCLOCK_SCHED`` of the whole process."""
    return (~pid << 3) | 2


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

    @property
    def server_ms(self) -> float:
        """Server CPU milliseconds per request."""
        return self.server_cpu_s / len(self.latencies_ms) * 1000


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
