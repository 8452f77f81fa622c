"""A real reelforge service for tests: the API served by uvicorn on a free loopback port
(in a thread of the test process) and real worker processes, on a temp data directory."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from reelforge.api.app import Services, create_app
from reelforge.api.serving import uvicorn_options
from reelforge.jobs.model import Store
from reelforge.runtime import (
    load_models,
    open_storage,
    open_store,
    start_workers,
    stop_workers,
)
from reelforge.settings import Settings
from reelforge.startup import ensure_key

LEGACY = "/v2/generate/video/minimax/generation"
UNIFIED = "/v2/video/generations"
TEST_KEY = "rf_test-key-for-the-suite-0123456789"


def spawned_children(pid: int) -> list[int]:
    """The processes ``pid`` started through ``multiprocessing`` (workers, uvicorn's API
    processes) from any of its threads (workers come from the supervisor's), not its
    resource tracker."""
    children = [
        child
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [
        int(child)
        for child in children
        if b"--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "port": free_port(),
        "api_key": TEST_KEY,
        "x264_preset": "ultrafast",
        "poll_seconds": 0.05,
        "lease_seconds": 5.0,
        "drain_seconds": 10.0,
    }
    fields.update(overrides)
    return Settings(**fields)


@dataclass
class Api:
    """A running API; ``client`` carries the test key."""

    settings: Settings
    store: Store
    base_url: str
    client: httpx.Client

    def create(self, body: dict[str, Any], route: str = LEGACY) -> httpx.Response:
        return self.client.post(route, json=body)

    def get(self, generation_id: str, route: str = LEGACY) -> dict[str, Any]:
        response = self.client.get(route, params={"generation_id": generation_id})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def wait(self, generation_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until the generation ends; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.get(generation_id)
            if answer["status"] in ("completed", "error"):
                return answer
            time.sleep(0.1)
        raise AssertionError(f"generation {generation_id} did not end within {timeout} s")


@contextmanager
def running_api(
    settings: Settings, wrap: Callable[[ASGIApp], ASGIApp] | None = None
) -> Iterator[Api]:
    """Serve the API on ``settings.port`` in a thread until the block ends (inside ``wrap``,
    an ASGI middleware, if given)."""
    store = open_store(settings)
    ensure_key(settings, store)
    app: ASGIApp = create_app(
        Services(settings, store, open_storage(settings), load_models(settings))
    )
    if wrap is not None:
        app = wrap(app)
    options = {**uvicorn_options(settings), "host": "127.0.0.1"}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    base_url = f"http://127.0.0.1:{settings.port}"
    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            yield Api(settings, store, base_url, client)
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@contextmanager
def running_workers(settings: Settings, count: int = 1) -> Iterator[list[BaseProcess]]:
    """``count`` real worker processes on the settings' data dir, drained at the end."""
    processes = start_workers(settings, count)
    try:
        yield processes
    finally:
        stop_workers(processes, timeout=15)
