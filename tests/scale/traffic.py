"""Clients of a cluster: creates spread over time across its APIs, and the waits after."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack

import httpx
import psycopg

from tests.service import LEGACY, TEST_KEY

HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}
TERMINAL = ("completed", "error")


class Submitter(threading.Thread):
    """Creates ``count`` generations in bursts of ``burst`` (back to back), a burst every
    ``interval`` seconds, taking the APIs in turn; notes the ids of those answered 200 and
    every other outcome."""

    def __init__(
        self, api_urls: list[str], count: int, interval: float, prompt: str, burst: int = 1
    ) -> None:
        super().__init__(name="submitter", daemon=True)
        self.api_urls, self.count, self.interval, self.prompt = api_urls, count, interval, prompt
        self.burst = burst
        self.ids: list[str] = []
        self.failures: list[str] = []
        self.per_api = [0] * len(api_urls)

    def run(self) -> None:
        with ExitStack() as stack:
            clients = [
                stack.enter_context(httpx.Client(base_url=url, headers=HEADERS, timeout=10))
                for url in self.api_urls
            ]
            began = time.monotonic()
            for index in range(self.count):
                due = began + index // self.burst * self.interval
                time.sleep(max(0.0, due - time.monotonic()))
                self._create(clients, index)

    def _create(self, clients: list[httpx.Client], index: int) -> None:
        which = index % len(clients)
        body = {"model": "preview", "prompt": f"{self.prompt} {index} [Pan right]"}
        try:
            response = clients[which].post(LEGACY, json=body)
        except httpx.TransportError as exc:
            self.failures.append(f"create {index}: {type(exc).__name__}")
            return
        if response.status_code != 200:
            self.failures.append(f"create {index}: HTTP {response.status_code}")
            return
        self.ids.append(response.json()["generation_id"])
        self.per_api[which] += 1

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"the creates did not end within {timeout} s")


def wait_finished(url: str, ids: list[str], timeout: float) -> float:
    """Wait until every job of ``ids`` is completed or in error (at most ``timeout``
    seconds); returns the seconds waited. Returns on timeout too: the tally tells."""
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() - began < timeout:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = ANY(%s)",
                (ids, list(TERMINAL)),
            ).fetchone()
            if row is not None and row[0] == len(ids):
                break
            time.sleep(0.1)
    return time.monotonic() - began


def answered_completed(api_urls: list[str], ids: list[str]) -> int:
    """How many of ``ids`` the APIs (taken in turn) answer as completed with a video URL."""
    done = 0
    with ExitStack() as stack:
        clients = [
            stack.enter_context(httpx.Client(base_url=url, headers=HEADERS, timeout=10))
            for url in api_urls
        ]
        for index, generation_id in enumerate(ids):
            client = clients[index % len(clients)]
            answer = client.get(LEGACY, params={"generation_id": generation_id}).json()
            done += answer["status"] == "completed" and bool(answer["video"]["url"])
    return done
