"""What the service benchmarks share: free ports, percentiles, stopping a server, and
polling a generation to its end."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time

import httpx

ROUTE = "/v2/generate/video/minimax/generation"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (with 50 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (uvicorn stops, then ``serve`` drains its workers); SIGKILL the group if slow."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def status_of(client: httpx.Client, generation_id: str) -> str:
    response = client.get(ROUTE, params={"generation_id": generation_id})
    response.raise_for_status()
    status: str = response.json()["status"]
    return status


def wait_end(
    client: httpx.Client, generation_id: str, *, deadline_s: float, pause_s: float
) -> None:
    """Poll every ``pause_s`` until the generation completes; raise if it fails or outlasts
    ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = status_of(client, generation_id)
        if status == "completed":
            return
        if status == "error":
            raise RuntimeError(f"generation {generation_id} ended in error")
        time.sleep(pause_s)
    raise RuntimeError(f"generation {generation_id} did not end within {deadline_s} s")
