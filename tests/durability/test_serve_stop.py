"""``reelforge serve`` and ``reelforge worker --processes N`` never leave their worker
processes behind: SIGTERM (systemd, docker stop) drains and stops them before the parent
exits, and a parent killed outright is noticed by its workers, which drain and exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service import free_port, spawned_children

START_S = 30.0


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has ended: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has ended; returns those still running after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


COMMANDS = {"serve": ("serve", "--workers", "2"), "worker": ("worker", "--processes", "2")}


@pytest.fixture(params=sorted(COMMANDS))
def serve(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[bytes], list[int], Path]]:
    """``reelforge serve --workers 2`` or ``reelforge worker --processes 2`` with its two
    workers up: the parent process, the workers' pids, the log."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        REELFORGE_DATA_DIR=str(tmp_path / "data"),
        REELFORGE_PORT=str(port),
        REELFORGE_DRAIN_SECONDS="2",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", *COMMANDS[request.param]],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + START_S
        while log.read_text().count("ready for") < 2 or len(workers) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            workers = spawned_children(process.pid)
            time.sleep(0.05)
        if request.param == "serve":
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        yield process, workers, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in wait_gone(workers, 10):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_the_workers_before_the_parent_exits(
    serve: tuple[subprocess.Popen[bytes], list[int], Path],
) -> None:
    process, workers, log = serve
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM, log.read_text()
    assert [pid for pid in workers if alive(pid)] == [], log.read_text()
    assert log.read_text().count("signal 15: draining") == 2


def test_workers_of_a_killed_parent_drain_and_exit(
    serve: tuple[subprocess.Popen[bytes], list[int], Path],
) -> None:
    process, workers, log = serve
    process.kill()
    process.wait(10)
    assert wait_gone(workers, 15) == [], log.read_text()
    assert log.read_text().count(f"parent process {process.pid} is gone: draining") == 2
