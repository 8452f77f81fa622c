"""``reelforge serve`` supervises its worker processes: a killed worker is reaped, logged and
replaced, and queued jobs complete; a worker that keeps dying at start stops ``serve`` with a
non-zero status and a message that says so."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.service import LEGACY, TEST_KEY, free_port, spawned_children

START_S = 60.0


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


@contextmanager
def serve(tmp_path: Path, **values: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """``reelforge serve`` with one worker; its process, its log file and its port."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", "serve", "--workers", "1"],
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


def test_a_killed_worker_is_reaped_logged_and_replaced(tmp_path: Path) -> None:
    with serve(tmp_path) as (process, log, port):
        wait_for(log, "ready for", process)
        (worker,) = spawned_children(process.pid)
        os.kill(worker, 9)
        wait_for(log, "ready for", process, count=2)
        assert f"worker 0 (pid {worker}) died: killed by SIGKILL" in log.read_text()
        assert not is_zombie(worker)
        (replacement,) = spawned_children(process.pid)
        assert replacement != worker
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            created = client.post(LEGACY, json={"model": "preview", "prompt": "after a death"})
            assert created.status_code == 200, created.text
            generation_id = created.json()["generation_id"]
            deadline = time.monotonic() + START_S
            while (answer := client.get(LEGACY, params={"generation_id": generation_id})).json()[
                "status"
            ] not in ("completed", "error"):
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.1)
        assert answer.json()["status"] == "completed", answer.text


def test_a_worker_that_keeps_dying_at_start_stops_serve(tmp_path: Path) -> None:
    # A model no registry serves: every worker process raises while it starts.
    with serve(tmp_path, REELFORGE_WORKER_MODELS='["no-such-model"]') as (process, log, _):
        assert process.wait(120) == 1, log.read_text()
    text = log.read_text()
    assert text.count("died at start: exit code 1") == 4
    last = text.strip().splitlines()[-1]
    assert last.startswith("error: worker process 0 died at start 5 times in a row"), text
