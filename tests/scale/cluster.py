"""A reelforge deployment in subprocesses: API processes and worker processes on one
PostgreSQL schema and one data directory, each worker its own process so that a test can
signal it alone (SIGKILL, SIGSTOP).

The APIs reach PostgreSQL directly; the workers reach it through whatever URL the test
gives (a ``Proxy`` whose connections it cuts). Every wait is bounded; ``running_cluster``
stops every process it started, whatever happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from tests.service import TEST_KEY, free_port

ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository: the processes' working directory, so ``python -m tests...`` works."""
REAL_WORKER: Final = (sys.executable, "-m", "reelforge", "worker")
START_S: Final = 30.0
STOP_S: Final = 10.0
READY_LINE: Final = "threads) ready for"
"""What ``run_worker`` logs once its store, storage and engines are up."""

FAST_JOBS: Final = {
    "REELFORGE_PREVIEW_SCALE": "0.1",  # 136x76 previews: ~20 ms of rendering a job
    "REELFORGE_X264_PRESET": "ultrafast",
    "REELFORGE_LEASE_SECONDS": "1.5",
    "REELFORGE_MAX_ATTEMPTS": "10",  # the API stamps it on each job: kills cannot exhaust one
    "REELFORGE_POLL_SECONDS": "0.05",
    "REELFORGE_DRAIN_SECONDS": "2",
}


@dataclass
class Cluster:
    """The running processes; ``workers[slot]`` is the slot's current process."""

    directory: Path
    env: dict[str, str]
    worker_command: tuple[str, ...]
    worker_env: dict[str, str]
    api_urls: list[str] = field(default_factory=list)
    apis: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)
    """Each worker process's log (stdout and stderr), by pid."""
    killed: set[int] = field(default_factory=set)
    """Pids the test killed with SIGKILL."""
    exits: list[str] = field(default_factory=list)
    """Workers that ended without being killed: pid, exit code and their log's last line."""

    @property
    def data_dir(self) -> Path:
        return Path(self.env["REELFORGE_DATA_DIR"])

    def start_api(self) -> None:
        port = free_port()
        command = (sys.executable, "-m", "reelforge", "serve", "--workers", "0", "--port")
        log = self.directory / f"api-{len(self.apis)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, str(port)], env=self.env, cwd=ROOT, stdout=out, stderr=out
            )
        self.apis.append(process)
        self.api_urls.append(f"http://127.0.0.1:{port}")
        _await_health(self.api_urls[-1], process, log)

    def start_worker(self, slot: int) -> subprocess.Popen[bytes]:
        """Start (or restart) the worker in ``slot``; does not wait for it to be ready."""
        log = self.directory / f"worker-{slot}-{len(self.logs)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                self.worker_command, env=self.worker_env, cwd=ROOT, stdout=out, stderr=out
            )
        self.logs[process.pid] = log
        if slot == len(self.workers):
            self.workers.append(process)
        else:
            self.workers[slot] = process
        return process

    def await_workers_ready(self) -> None:
        deadline = time.monotonic() + START_S
        for process in self.workers:
            while READY_LINE not in self.log(process.pid):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start:\n{self.log(process.pid)[-3000:]}")
                time.sleep(0.05)

    def kill(self, slot: int) -> int:
        """SIGKILL the worker in ``slot``, start a new one there; returns the killed pid."""
        process = self.workers[slot]
        process.kill()
        process.wait(STOP_S)
        self.killed.add(process.pid)
        self.start_worker(slot)
        return process.pid

    def revive(self) -> None:
        """Restart every worker that ended on its own, noting why it ended."""
        for slot, process in enumerate(self.workers):
            if process.poll() is not None:
                last = self.log(process.pid).strip().splitlines()[-1:] or ["(empty log)"]
                self.exits.append(f"pid {process.pid} exit {process.returncode}: {last[0]}")
                self.start_worker(slot)

    def drain_workers(self) -> None:
        """SIGTERM every worker and wait for it to finish its job and exit, so that no
        attempt is still between storing its video and recording it; a worker that does
        not exit in time is SIGKILLed (and counted as killed), one that exits with an error
        is noted in ``exits``."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.workers:
            try:
                code = process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_S)
                self.killed.add(process.pid)
                continue
            if code != 0:
                last = self.log(process.pid).strip().splitlines()[-1:] or ["(empty log)"]
                self.exits.append(f"pid {process.pid} drained with exit {code}: {last[0]}")

    def log(self, pid: int) -> str:
        return self.logs[pid].read_text(errors="replace")

    def stop(self) -> None:
        """Drain the workers (resumed first if paused), then stop the APIs; SIGKILL laggards."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.apis:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, *self.apis]:
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_S)


@contextmanager
def running_cluster(
    directory: Path,
    *,
    database_url: str,
    worker_database_url: str,
    worker_command: tuple[str, ...] = REAL_WORKER,
    apis: int = 2,
    workers: int = 3,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """``apis`` API processes (``serve --workers 0``, one port each) and ``workers`` worker
    processes, all ready, on a fresh data directory under ``directory``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(
        FAST_JOBS,
        REELFORGE_DATA_DIR=str(directory / "data"),
        REELFORGE_API_KEY=TEST_KEY,
        REELFORGE_URL_SECRET="s" * 32,  # one secret for all, none raced for on disk
        REELFORGE_DATABASE_URL=database_url,
        **(extra_env or {}),
    )
    worker_env = {**env, "REELFORGE_DATABASE_URL": worker_database_url}
    cluster = Cluster(directory, env, worker_command, worker_env)
    try:
        for _ in range(apis):
            cluster.start_api()
        for slot in range(workers):
            cluster.start_worker(slot)
        cluster.await_workers_ready()
        yield cluster
    finally:
        cluster.stop()


def _await_health(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_S
    with httpx.Client(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"the API did not start:\n{log.read_text(errors='replace')[-3000:]}")
