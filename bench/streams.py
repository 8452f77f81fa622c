"""What idle live streams cost the API process: its CPU while N streams of queued jobs stay
open (no worker: nothing happens to the jobs), against the same process with none open (the
floor), and the hub's reads of the event log meanwhile.

Run: ``python bench/streams.py [--streams 200] [--seconds 10]`` (about half a minute). It
starts ``python -m reelforge serve --workers 0`` on a free loopback port and a temp data
directory (SQLite, the default ``REELFORGE_STREAM_POLL_SECONDS`` and heartbeat), creates the
jobs, measures the server's CPU (its threads' ``schedstat``) over ``--seconds`` with no stream,
then with 1 and with N streams open, each phase after a second of settling. Everything is
stopped and removed on exit; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import ROUTE, free_port, stop

KEY = "rf_bench-key-for-the-stream-bench-0123"


def cpu_seconds(pid: int) -> float:
    """CPU time of all of ``pid``'s threads, to the nanosecond (``schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def hold(base_url: str, ids: list[str], seconds: float, pid: int) -> float:
    """Open a stream per id, wait for each first event, then the server's CPU over
    ``seconds`` (per second)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=len(ids) + 1)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as client:
        opened = asyncio.Event()
        ready = 0

        async def one(generation_id: str) -> None:
            nonlocal ready
            params = {"generation_id": generation_id}
            async with client.stream("GET", ROUTE + "/events", params=params) as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        ready += 1
                        if ready == len(ids):
                            opened.set()
                    await asyncio.sleep(0)

        tasks = [asyncio.create_task(one(i)) for i in ids]
        await asyncio.wait_for(opened.wait(), 60) if ids else None
        await asyncio.sleep(1)
        before = cpu_seconds(pid)
        await asyncio.sleep(seconds)
        used = cpu_seconds(pid) - before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return used / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELFORGE_")}
        env |= {"REELFORGE_DATA_DIR": directory, "REELFORGE_API_KEY": KEY}
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", "0"]
        server = subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            ids = create(base_url, args.streams)
            floor = asyncio.run(hold(base_url, [], args.seconds, server.pid))
            single = asyncio.run(hold(base_url, ids[:1], args.seconds, server.pid))
            many = asyncio.run(hold(base_url, ids, args.seconds, server.pid))
        finally:
            stop(server, 10)
    per_stream = (many - floor) / args.streams
    print(
        f"server CPU, ms per second: no stream {floor * 1000:.2f} (floor), 1 stream "
        f"{single * 1000:.2f}, {args.streams} streams {many * 1000:.2f}"
    )
    print(
        f"per idle stream: {per_stream * 1e6:.1f} µs of CPU a second; "
        f"{args.streams} streams = {many / max(floor, 1e-9):.2f}x the floor"
    )


def create(base_url: str, count: int) -> list[str]:
    """``count`` queued generations (the server answers once it is up)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"}
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=base_url, headers=headers) as client:
        while True:
            try:
                client.get("/healthz").raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return [client.post(ROUTE, json=body).json()["generation_id"] for _ in range(count)]


if __name__ == "__main__":
    main()
