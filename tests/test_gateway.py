"""The gateway engine end to end, on real processes on loopback: reelforge A (the preview
engine) is the hosted provider of reelforge B through each of A's dialects.

B's client gets a video served from B's storage, byte for byte A's; A killed mid-job and
restarted: B's job completes and A saw one submission; A refusing the request: B's job ends
``UpstreamRejected`` with A's message; a failing upstream falls back to B's preview engine; a
client's cancel at B cancels A's job; the provider key is in no log line and no row of B.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.service import LEGACY, free_port

A_KEY = "rf_provider-key-of-a-0123456789abcdef"
"""B's key at A: the provider key that must never show in B's logs or database."""
B_KEY = "rf_client-key-of-b-0123456789abcdef"
START_S = 60.0
A_REGISTRY = """
hailuo = "preview"
[models.preview]
engine = "preview"
dtype = "float32"
device = "cpu"
[models.broken]
engine = "preview"
dtype = "float32"
device = "cpu"
job_timeout_seconds = 0.001
[models.unserved]
engine = "preview"
dtype = "float32"
device = "cpu"
"""
A_WORKER_MODELS = '["preview", "minimax/hailuo-02", "broken"]'
"""No worker of A takes ``unserved``: its jobs wait in A's queue."""


def b_registry(a_url: str) -> str:
    """B's models: one per A dialect, one A refuses, one that fails at A and falls back."""
    hosted = {
        "via-aiml": ("aiml", f"{a_url}/v2", "preview", ""),
        "via-minimax": ("minimax", a_url, "preview", ""),
        "via-openai": ("openai", f"{a_url}/v1", "preview", ""),
        "refused": ("aiml", f"{a_url}/v2", "no-such-model", ""),
        "failing": ("aiml", f"{a_url}/v2", "broken", ', fallback = "preview"'),
        "stalled": ("openai", f"{a_url}/v1", "unserved", ""),
    }
    tables = [
        f'[models.{name}]\nengine = "upstream"\noptions = {{ provider = "{provider}", '
        f'base_url = "{base}", api_key_env = "RF_PROVIDER_KEY", model = "{model}", '
        f"poll_seconds = 0.1, request_timeout_seconds = 5.0{extra} }}"
        for name, (provider, base, model, extra) in hosted.items()
    ]
    preview = '[models.preview]\nengine = "preview"\ndtype = "float32"\ndevice = "cpu"'
    return "\n".join([preview, *tables]) + "\n"


class Served:
    """``reelforge serve`` in a session of its own (killed as a whole), logging to a file."""

    def __init__(self, root: Path, key: str, registry: str, **env: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "models.toml").write_text(registry)
        self.root, self.key, self.port = root, key, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REELFORGE_")}
        self.env.update(
            REELFORGE_DATA_DIR=str(root / "data"),
            REELFORGE_PORT=str(self.port),
            REELFORGE_API_KEY=key,
            REELFORGE_MODELS=str(root / "models.toml"),
            REELFORGE_X264_PRESET="ultrafast",
            REELFORGE_PREVIEW_SCALE="0.25",
            REELFORGE_POLL_SECONDS="0.05",
            REELFORGE_LEASE_SECONDS="2",
            REELFORGE_DRAIN_SECONDS="2",
            **env,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def start(self, ready_lines: int) -> None:
        """Start, and wait for ``ready_lines`` worker processes and the API."""
        before = self.log.read_text().count("ready for") if self.log.exists() else 0
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reelforge", "serve"],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_S
        while self.log.read_text().count("ready for") < before + ready_lines or not self._up():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"serve did not start:\n{self.log.read_text()}"
            time.sleep(0.1)

    def _up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL the server and its workers at once (a machine lost)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (the workers drain), then wait."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.root / "data" / "reelforge.sqlite3")

    def create(self, model: str, duration: int = 6) -> str:
        response = self.client.post(
            LEGACY, json={"model": model, "prompt": "a red fox", "duration": duration}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["generation_id"])

    def get(self, generation_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get(
            LEGACY, params={"generation_id": generation_id}
        ).json()
        return answer

    def wait(self, generation_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.get(generation_id)
            if answer["status"] in ("completed", "error"):
                return answer
            time.sleep(0.1)
        raise AssertionError(f"{generation_id} did not end in {timeout} s:\n{self.log.read_text()}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    """A (the provider) and B (the gateway in front of it), both serving."""
    root = tmp_path_factory.mktemp("gateway")
    a = Served(root / "a", A_KEY, A_REGISTRY, REELFORGE_WORKER_MODELS=A_WORKER_MODELS)
    b = Served(root / "b", B_KEY, b_registry(a.url), RF_PROVIDER_KEY=A_KEY)
    try:
        a.start(ready_lines=1)
        b.start(ready_lines=2)  # the local worker and the upstream pool
        yield a, b
    finally:
        for served in (b, a):
            served.stop()
            served.client.close()


def mp4_length(data: bytes, where: Path) -> tuple[int, int, int, float]:
    """Width, height, frames and seconds of an MP4, decoded with PyAV."""
    where.write_bytes(data)
    with av.open(str(where)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert stream.duration is not None
        assert stream.time_base is not None
        return stream.width, stream.height, frames, float(stream.duration * stream.time_base)


def test_b_is_ready_once_its_upstream_pool_reports(pair: tuple[Served, Served]) -> None:
    _, b = pair
    deadline = time.monotonic() + 30
    while (answer := httpx.get(f"{b.url}/readyz", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.1)
    assert answer.json() == {"ready": True, "waiting_for": []}


@pytest.mark.parametrize("provider", ["aiml", "minimax", "openai"])
def test_each_dialect_of_a_serves_b_a_video_from_b_storage(
    pair: tuple[Served, Served], provider: str, tmp_path: Path
) -> None:
    a, b = pair
    done = b.wait(b.create(f"via-{provider}"))
    assert done["status"] == "completed", done
    url = done["video"]["url"]
    assert url.startswith(b.url), url  # served from B's storage, not A's link
    mine = httpx.get(url, timeout=30).content
    upstream_id = done["meta"]["upstream"]["id"]
    theirs = a.get(upstream_id)
    assert theirs["status"] == "completed", theirs
    original = httpx.get(theirs["video"]["url"], timeout=30).content
    assert mine == original
    assert mp4_length(mine, tmp_path / "b.mp4") == mp4_length(original, tmp_path / "a.mp4")
    assert done["meta"]["video"]["bytes"] == len(original)


def test_a_refusal_ends_b_job_upstream_rejected_with_a_message(pair: tuple[Served, Served]) -> None:
    a, b = pair
    refusal = a.client.post(LEGACY, json={"model": "no-such-model", "prompt": "a red fox"})
    assert refusal.status_code == 400
    a_message = refusal.json()["error"]["message"]
    done = b.wait(b.create("refused"))
    assert done["status"] == "error", done
    assert done["error"]["name"] == "UpstreamRejected"
    assert a_message in done["error"]["message"]


def test_a_failing_upstream_falls_back_to_the_preview(pair: tuple[Served, Served]) -> None:
    a, b = pair
    job_id = b.create("failing")
    done = b.wait(job_id)
    assert done["status"] == "completed", done
    assert done["model"] == "preview"
    assert "upstream" not in done["meta"]  # made by B's own preview engine
    with a.db() as db:
        failed = db.execute("SELECT error_name FROM jobs WHERE model = 'broken'").fetchall()
    assert failed == [("TimedOut",)]


def test_a_cancel_at_b_cancels_the_job_at_a(pair: tuple[Served, Served]) -> None:
    a, b = pair
    job_id = b.create("stalled")  # waits in A's queue: no worker of A takes its model
    upstream_id = wait_for_upstream_id(b, job_id)
    response = b.client.delete(LEGACY, params={"generation_id": job_id})
    assert response.status_code == 200, response.text
    done = b.wait(job_id)
    assert done["error"]["name"] == "Cancelled", done
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and a_job(a, upstream_id)[1] is None:
        time.sleep(0.05)
    assert a_job(a, upstream_id) == ("error", "Cancelled")


def test_one_upstream_process_waits_on_many_jobs_at_once(pair: tuple[Served, Served]) -> None:
    _, b = pair
    job_ids = [b.create("stalled") for _ in range(4)]  # each waits in A's queue
    for job_id in job_ids:
        wait_for_upstream_id(b, job_id)
    with b.db() as db:
        rows = db.execute(
            f"SELECT status, worker_id FROM jobs WHERE id IN ({','.join('?' * 4)})", job_ids
        ).fetchall()
    assert {status for status, _ in rows} == {"generating"}
    assert len({worker.rsplit(":", 1)[0] for _, worker in rows}) == 1  # one process
    for job_id in job_ids:
        b.client.delete(LEGACY, params={"generation_id": job_id})
    for job_id in job_ids:
        assert b.wait(job_id)["error"]["name"] == "Cancelled"


def a_job(a: Served, job_id: str) -> tuple[str, str | None]:
    """Status and error name of A's job ``job_id``, read from A's database."""
    with a.db() as db:
        status, error = db.execute(
            "SELECT status, error_name FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    return str(status), error


def wait_for_upstream_id(b: Served, job_id: str, timeout: float = 30.0) -> str:
    """B's provider id for ``job_id``, as soon as B's worker kept it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with b.db() as db:
            (upstream_id,) = db.execute(
                "SELECT upstream_id FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if upstream_id is not None:
            return str(upstream_id)
        time.sleep(0.02)
    raise AssertionError(f"B kept no provider id for {job_id}")


def test_a_killed_mid_job_and_restarted_b_completes_with_one_submission(
    pair: tuple[Served, Served],
) -> None:
    a, b = pair
    with a.db() as db:
        (before,) = db.execute("SELECT count(*) FROM jobs").fetchone()
    job_id = b.create("stalled")  # A accepted it and holds it unfinished: deterministic
    upstream_id = wait_for_upstream_id(b, job_id)
    time.sleep(0.3)  # B polls it at least once
    a.kill()
    assert a_job(a, upstream_id) == ("queued", None)
    time.sleep(1.0)  # B polls a dead provider meanwhile
    del a.env["REELFORGE_WORKER_MODELS"]  # the restarted A runs every model
    a.start(ready_lines=1)
    done = b.wait(job_id, timeout=90)
    assert done["status"] == "completed", done
    assert done["meta"]["upstream"]["id"] == upstream_id
    with a.db() as db:
        (after,) = db.execute("SELECT count(*) FROM jobs").fetchone()
    assert after == before + 1  # one submission


def test_b_upstream_worker_killed_resumes_polling_without_submitting_again(
    pair: tuple[Served, Served],
) -> None:
    a, b = pair
    with a.db() as db:
        (before,) = db.execute("SELECT count(*) FROM jobs").fetchone()
    job_id = b.create("via-aiml")
    upstream_id = wait_for_upstream_id(b, job_id)
    with b.db() as db:
        (worker_id,) = db.execute("SELECT worker_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
    os.kill(int(worker_id.split(":")[1]), signal.SIGKILL)  # B's upstream pool process
    done = b.wait(job_id, timeout=60)
    assert done["status"] == "completed", done
    assert done["meta"]["upstream"]["id"] == upstream_id
    with b.db() as db:
        (attempts,) = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert attempts == 2  # claimed again by the restarted pool
    with a.db() as db:
        (after,) = db.execute("SELECT count(*) FROM jobs").fetchone()
    assert after == before + 1  # it polled the same job at A


def test_the_provider_key_is_in_no_log_line_and_no_row(pair: tuple[Served, Served]) -> None:
    """Last in this module: B's log and database after every test above."""
    _, b = pair
    b.stop()
    log = b.log.read_text()
    assert "provider openai" in log  # the upstream pool logged its retries while A was down
    assert A_KEY not in log
    with b.db() as db:
        dump = "\n".join(db.iterdump())
    assert "via-aiml" in dump
    assert A_KEY not in dump
