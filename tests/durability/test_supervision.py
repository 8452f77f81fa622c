"""``reelforge serve`` and ``reelforge worker --processes N`` supervise their worker processes:
a killed worker is reaped, logged and replaced, and queued jobs complete; a worker that keeps
dying at start stops ``serve`` with a non-zero status and a message that says so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reelforge.contract import Status
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest
from tests.service import TEST_KEY, free_port, spawned_children

START_S = 60.0
ENDED = (Status.COMPLETED, Status.ERROR)


def environment(data_dir: Path, port: int, **values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        REELFORGE_DATA_DIR=str(data_dir),
        REELFORGE_PORT=str(port),
        REELFORGE_API_KEY=TEST_KEY,
        REELFORGE_PREVIEW_SCALE="0.1",
        REELFORGE_X264_PRESET="ultrafast",
        REELFORGE_POLL_SECONDS="0.05",
        REELFORGE_LEASE_SECONDS="2",
        REELFORGE_DRAIN_SECONDS="2",
        **values,
    )
    return env


COMMANDS = {"serve": ["serve", "--workers", "1"], "worker": ["worker", "--processes", "2"]}


@contextmanager
def serve(
    tmp_path: Path, command: str = "serve", **values: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """``reelforge serve`` with one worker (or ``worker`` with two); its process, its log
    file and its port."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", *COMMANDS[command]],
            env=environment(tmp_path / "data", port, **values),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log, port
    finally:
        process.terminate()
        process.wait(30)


def wait_for(log: Path, text: str, process: subprocess.Popen[bytes], count: int = 1) -> None:
    deadline = time.monotonic() + START_S
    while log.read_text().count(text) < count:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text()}"
        time.sleep(0.05)


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_killed_worker_is_reaped_logged_and_replaced(tmp_path: Path, command: str) -> None:
    with serve(tmp_path, command) as (process, log, _):
        wait_for(log, "ready for", process, count=2 if command == "worker" else 1)
        worker = spawned_children(process.pid)[0]
        os.kill(worker, 9)
        # "died" or "died at start": the worker logs its readiness a moment before its
        # supervisor hears of it, and a kill in between is (rightly) a death at start.
        wait_for(log, f"(pid {worker}) died", process)
        death = next(
            line for line in log.read_text().splitlines() if f"(pid {worker}) died" in line
        )
        assert death.endswith(": killed by SIGKILL; restarting in 0.5 s"), death
        wait_for(log, "restarted as pid", process)
        assert not is_zombie(worker)
        assert worker not in spawned_children(process.pid)
        store = SQLiteJobStore(tmp_path / "data" / "reelforge.sqlite3")
        try:
            job_id = store.create(
                owner="k", model="preview", request=JobRequest(prompt="after"), max_attempts=1
            ).id
            deadline = time.monotonic() + START_S
            while (job := store.get(job_id)) is not None and job.status not in ENDED:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert job is not None
            assert job.status is Status.COMPLETED, job
        finally:
            store.close()


def test_a_worker_that_keeps_dying_at_start_stops_serve(tmp_path: Path) -> None:
    # A model no registry serves: every worker process raises while it starts.
    with serve(tmp_path, REELFORGE_WORKER_MODELS='["no-such-model"]') as (process, log, _):
        assert process.wait(120) == 1, log.read_text()
    text = log.read_text()
    assert text.count("died at start: exit code 1") == 4
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: worker process 0 died at start 5 times in a row"), text
