"""The prompt optimizer in the worker: the engine gets the rewrite, ``meta.prompt`` records
both prompts, and an optimizer that is down or hangs never fails or stalls a job past its
timeout. A real worker, SQLite store and local storage; the LLM is a fake on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reelforge.contract import Status
from reelforge.engines.base import Keyframes, OnStep
from reelforge.jobs.model import Job, Phase
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.optimizer import Endpoint, PromptOptimizer
from reelforge.request import ImageRef, JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Video
from reelforge.worker import Worker
from tests.chat_server import ChatServer, chat_server
from tests.service import free_port
from tests.still_engine import StillEngine

PROMPT = "A lighthouse at dusk [Truck left, Pan right]"
REWRITE = "Wide shot of a lighthouse at dusk, waves breaking below [Truck left, Pan right]"


class RecordingEngine(StillEngine):
    """The still engine, keeping every request it was given."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        self.requests.append(request)
        return super().generate(request, keyframes, on_step)


class SlowStorage(LocalStorage):
    """Local storage whose input images take ``delay`` seconds to load."""

    delay = 0.0

    def load_input(self, key: str) -> bytes:
        time.sleep(self.delay)
        return super().load_input(key)


class Rig:
    def __init__(self, tmp_path: Path, url: str, timeout: float) -> None:
        self.settings = Settings(data_dir=tmp_path, x264_preset="ultrafast")
        self.store = SQLiteJobStore(self.settings.database_path)
        self.storage = SlowStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60)
        self.engine = RecordingEngine()
        self.optimizer = PromptOptimizer(Endpoint(url, "qwen-test", None, timeout))
        engines = {"preview": self.engine}
        self.worker = Worker(
            self.settings, self.store, self.storage, engines, optimizer=self.optimizer
        )

    def run(self, request: JobRequest) -> Job:
        """Create a job for ``request``, run it to its end, and return it."""
        job_id = self.store.create(owner="k", model="preview", request=request, max_attempts=1).id
        lease = self.store.claim(worker_id=self.worker.worker_id, lease_seconds=30)
        assert lease is not None
        self.worker.process(lease, threading.Event())
        self.worker.finish_pending()
        job = self.store.get(job_id)
        assert job is not None
        return job

    def close(self) -> None:
        self.optimizer.close()
        self.store.close()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with chat_server(ChatServer(reply=REWRITE)) as live:
        yield live


@pytest.fixture
def rig(tmp_path: Path, chat: ChatServer) -> Iterator[Rig]:
    made = Rig(tmp_path, chat.url, timeout=1.0)
    yield made
    chat.released.set()
    made.close()


def test_the_engine_gets_the_rewrite_and_meta_shows_both(rig: Rig) -> None:
    job = rig.run(JobRequest(prompt=PROMPT))
    assert job.status is Status.COMPLETED
    (request,) = rig.engine.requests
    assert request.prompt == REWRITE
    prompt = job.meta["prompt"]
    assert (prompt["original"], prompt["used"]) == (PROMPT, REWRITE)
    assert prompt["optimizer"]["status"] == "rewritten"
    assert prompt["optimizer"]["model"] == "qwen-test"
    assert job.request.prompt == PROMPT  # the stored request stays the client's
    assert "video" in job.meta


def test_brackets_the_llm_dropped_reach_the_engine(rig: Rig, chat: ChatServer) -> None:
    chat.reply = "Wide shot of a lighthouse at dusk as the camera glides sideways"
    job = rig.run(JobRequest(prompt=PROMPT))
    (request,) = rig.engine.requests
    assert request.prompt.endswith("[Truck left, Pan right]")
    assert job.meta["prompt"]["optimizer"]["restored"] == ["[Truck left, Pan right]"]


def test_the_flag_false_never_calls_the_llm(rig: Rig, chat: ChatServer) -> None:
    job = rig.run(JobRequest(prompt=PROMPT, prompt_optimizer=False))
    assert chat.bodies == []
    assert rig.engine.requests == [JobRequest(prompt=PROMPT, prompt_optimizer=False)]
    assert job.meta["prompt"]["used"] == PROMPT
    assert job.meta["prompt"]["optimizer"]["status"] == "skipped"


def test_a_hanging_llm_costs_the_job_its_timeout_then_the_original_is_used(
    rig: Rig, chat: ChatServer
) -> None:
    chat.delay = 60
    started = time.monotonic()
    job = rig.run(JobRequest(prompt=PROMPT))
    took = time.monotonic() - started
    assert job.status is Status.COMPLETED
    assert 1.0 <= took < 1.0 + 3
    assert [r.prompt for r in rig.engine.requests] == [PROMPT]
    assert job.meta["prompt"]["optimizer"] == {
        "status": "failed",
        "reason": "no answer within 1 s",
        "model": "qwen-test",
    }
    phases = [event.phase for event in rig.store.events_after(0, job_id=job.id)]
    assert Phase.OPTIMIZING in phases


def test_an_llm_that_is_down_never_fails_the_job(tmp_path: Path) -> None:
    rig = Rig(tmp_path, f"http://127.0.0.1:{free_port()}/v1", timeout=1.0)
    job = rig.run(JobRequest(prompt=PROMPT))
    rig.close()
    assert job.status is Status.COMPLETED
    assert [r.prompt for r in rig.engine.requests] == [PROMPT]
    assert job.meta["prompt"]["optimizer"]["reason"] == "unreachable (ConnectError)"


def test_the_rewrite_runs_while_the_inputs_load(rig: Rig, chat: ChatServer) -> None:
    png = rig.settings.data_dir / "in.png"
    Image.new("RGB", (640, 400), (10, 200, 30)).save(png)
    key = rig.storage.save_input(png.read_bytes())
    rig.storage.delay = chat.delay = 0.8  # one after the other: 1.6 s at least
    started = time.monotonic()
    job = rig.run(JobRequest(prompt=PROMPT, first_frame=ImageRef(field="image_url", key=key)))
    took = time.monotonic() - started
    assert job.status is Status.COMPLETED, job.error_message
    assert job.meta["prompt"]["used"] == REWRITE
    assert took < 1.4, "the rewrite waited for the inputs"
