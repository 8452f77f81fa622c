"""The SDK's ``wait`` follows the live stream where the server has one: against reelforge
(the server's own count of requests shows one stream and no poll), against a server without
it (polls instead), and across a dropped stream (resumed with ``Last-Event-ID``)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from reelforge.cli import app
from reelforge.client import AsyncClient, Client, Generation, GenerationFailed
from reelforge.jobs.model import Phase
from tests.client.inputs import QUICK
from tests.client.loopback import LEGACY, Answer, ScriptedServer, generation, in_turn, serving
from tests.service import TEST_KEY, Api, running_api, running_workers, service_settings

EVENTS = LEGACY + "/events"
BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"}


class Counting:
    """ASGI middleware keeping each request's method and path, as the server saw them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@contextmanager
def counting_api(tmp_path: Path, **settings: object) -> Iterator[tuple[Api, Counting]]:
    found: list[Counting] = []

    def wrap(inner: ASGIApp) -> ASGIApp:
        found.append(Counting(inner))
        return found[0]

    with running_api(service_settings(tmp_path, **settings), wrap=wrap) as api:
        yield api, found[0]


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[Api, Counting]]:
    with counting_api(tmp_path, stream_poll_seconds=0.05) as running:
        yield running


@pytest.fixture
def loopback() -> Iterator[ScriptedServer]:
    with serving() as server:
        yield server


def work_on(api: Api, generation_id: str, *, fail: bool = False) -> threading.Thread:
    """Move the job as a worker would, a step every 0.1 s, in a thread."""

    def steps() -> None:
        time.sleep(0.3)
        lease = api.store.claim(worker_id="w1", lease_seconds=30)
        assert lease is not None
        assert lease.job_id == generation_id
        for progress, phase in ((30, Phase.GENERATING), (70, Phase.ENCODING)):
            time.sleep(0.1)
            api.store.heartbeat(lease, lease_seconds=30, progress=progress, phase=phase)
        time.sleep(0.1)
        if fail:
            api.store.fail(lease, error_name="EngineFailed", error_message="OOM", credits_used=1)
        else:
            api.store.complete(lease, video_key="videos/v.mp4", credits_used=1, meta={})

    thread = threading.Thread(target=steps, daemon=True)
    thread.start()
    return thread


def created(api: Api) -> str:
    generation_id: str = api.create(BODY).json()["generation_id"]
    return generation_id


def test_wait_follows_the_stream_and_never_polls(counted: tuple[Api, Counting]) -> None:
    api, counting = counted
    generation_id = created(api)
    worker = work_on(api, generation_id)
    seen: list[Generation] = []
    with Client(f"{api.base_url}/v2", TEST_KEY, policy=QUICK) as client:
        done = client.wait(generation_id, timeout=20, on_progress=seen.append)
    worker.join(5)
    assert done.status == "completed"
    assert done.video_url is not None
    assert [(g.status.value, g.progress) for g in seen] == [
        ("queued", 0),
        ("generating", 0),
        ("generating", 30),
        ("generating", 70),
        ("completed", 100),
    ]
    asked = [request for request in counting.seen if request[1].startswith("/v2/generate")]
    assert asked == [("POST", LEGACY), ("GET", EVENTS)]


def test_the_async_client_follows_the_stream_too(counted: tuple[Api, Counting]) -> None:
    api, counting = counted
    generation_id = created(api)
    worker = work_on(api, generation_id, fail=True)

    async def wait() -> None:
        async with AsyncClient(f"{api.base_url}/v2", TEST_KEY, policy=QUICK) as client:
            with pytest.raises(GenerationFailed, match="OOM"):
                await client.wait(generation_id, timeout=20)

    anyio.run(wait)
    worker.join(5)
    assert counting.seen.count(("GET", EVENTS)) == 1
    assert ("GET", LEGACY) not in counting.seen


def test_wait_polls_a_server_without_the_stream(loopback: ScriptedServer) -> None:
    loopback.route(
        "GET", LEGACY, in_turn(generation("generating", progress=50), generation("completed"))
    )
    with Client(f"{loopback.base_url}/v2", "k", policy=QUICK) as client:
        done = client.wait("g1", timeout=10)
    assert done.status == "completed"
    assert len(loopback.requests("GET", EVENTS)) == 1  # 404: no stream here
    assert len(loopback.requests("GET", LEGACY)) == 2


def sse(*events: tuple[int, str, int]) -> Answer:
    """An event stream that the server closes after ``events`` (id, status, progress)."""
    frames = "".join(
        f"id: {event_id}\nevent: generation\ndata: "
        + json.dumps({"id": "g1", "status": status, "progress": progress, "video": None})
        + "\n\n"
        for event_id, status, progress in events
    )
    return Answer(200, (": heartbeat\n\n" + frames).encode(), {"Content-Type": "text/event-stream"})


def test_a_dropped_stream_is_resumed_with_last_event_id(loopback: ScriptedServer) -> None:
    loopback.route(
        "GET",
        EVENTS,
        in_turn(sse((1, "queued", 0), (2, "generating", 40)), sse((3, "completed", 100))),
    )
    seen: list[Generation] = []
    with Client(f"{loopback.base_url}/v2", "k", policy=QUICK) as client:
        done = client.wait("g1", timeout=10, on_progress=seen.append)
    assert done.status == "completed"
    assert [g.progress for g in seen] == [0, 40, 100]
    streams = loopback.requests("GET", EVENTS)
    assert [s.headers.get("last-event-id") for s in streams] == [None, "2"]
    assert {s.headers["accept"] for s in streams} == {"text/event-stream"}
    assert loopback.requests("GET", LEGACY) == []


def test_the_clis_progress_bar_follows_the_stream(tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    with (
        counting_api(tmp_path / "service", preview_scale=0.1) as (api, counting),
        running_workers(api.settings),
    ):
        flags = ["--base-url", f"{api.base_url}/v2", "--api-key", TEST_KEY]
        done = CliRunner().invoke(app, ["generate", "A lighthouse", "-o", str(output), *flags])
    assert done.exit_code == 0, done.output
    assert output.stat().st_size > 0
    asked = [request for request in counting.seen if request[1].startswith("/v2/generate")]
    assert asked == [("POST", LEGACY), ("GET", EVENTS)]


def test_a_stream_of_something_else_is_left_for_polling(loopback: ScriptedServer) -> None:
    garbage = b"id: 1\nevent: generation\ndata: <html>\n\n"
    events = Answer(200, garbage, {"Content-Type": "text/event-stream"})
    loopback.route("GET", EVENTS, in_turn(events))
    loopback.route("GET", LEGACY, in_turn(generation("completed")))
    with Client(f"{loopback.base_url}/v2", "k", policy=QUICK) as client:
        assert client.wait("g1", timeout=10).status == "completed"
    assert len(loopback.requests("GET", LEGACY)) == 1
