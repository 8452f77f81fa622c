"""The gateway engine's pace against a scripted provider on loopback (a real HTTP server):
it waits what ``Retry-After`` and ``openai-poll-after-ms`` ask, passes the provider's
progress on, sends the key with every call (the OpenAI content route takes it), and a
cancel from ``on_step`` stops its wait."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from reelforge.engines.base import Keyframes
from reelforge.engines.registry import ModelSpec
from reelforge.engines.upstream import UpstreamEngine
from reelforge.errors import Cancelled
from reelforge.request import JobRequest

KEY = "sk-provider-secret"
VIDEO = b"\x00\x00\x00\x18ftypmp42 not really a video"


class Provider(BaseHTTPRequestHandler):
    """An OpenAI-style provider: the first create is refused with 429 and ``Retry-After:
    1``; a video is ``in_progress`` (40 %) for two polls, each asking 600 ms, then done."""

    seen: ClassVar[list[tuple[float, str, str, str | None]]] = []
    polls: ClassVar[int] = 0

    def do_POST(self) -> None:
        self._note()
        creates = sum(1 for _, method, _, _ in self.seen if method == "POST")
        if creates == 1:
            self._answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        else:
            self._answer(200, {"id": "video_1", "status": "queued"})

    def do_GET(self) -> None:
        self._note()
        if self.path.endswith("/content"):
            self._answer_bytes(VIDEO)
            return
        Provider.polls += 1
        if Provider.polls <= 2:
            body = {"id": "video_1", "status": "in_progress", "progress": 40}
            self._answer(200, body, {"openai-poll-after-ms": "600"})
        else:
            self._answer(200, {"id": "video_1", "status": "completed", "progress": 100})

    def _note(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        entry = (time.monotonic(), self.command, self.path, self.headers.get("Authorization"))
        self.seen.append(entry)

    def _answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def provider() -> Iterator[str]:
    Provider.seen.clear()
    Provider.polls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def engine(base_url: str, monkeypatch: pytest.MonkeyPatch) -> UpstreamEngine:
    monkeypatch.setenv("RF_PACE_KEY", KEY)
    options = {
        "provider": "openai",
        "base_url": base_url,
        "api_key_env": "RF_PACE_KEY",
        "model": "sora-2",
        "poll_seconds": 0.05,
    }
    spec = ModelSpec(id="hosted", engine="upstream", options=options)
    built = UpstreamEngine(spec)
    built.load()
    return built


def test_it_waits_what_the_provider_asks_and_reports_its_progress(
    provider: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hosted = engine(provider, monkeypatch)
    steps: list[tuple[int, int]] = []
    upstream_id = hosted.submit(JobRequest(prompt="a fox"), Keyframes(), lambda *s: None)
    assert upstream_id == "video_1"
    hosted.fetch(upstream_id, tmp_path / "v.mp4", lambda *step: steps.append(step))
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    times = {method + path: at for at, method, path, _ in Provider.seen}
    posts = [at for at, method, _, _ in Provider.seen if method == "POST"]
    assert posts[1] - posts[0] >= 1.0  # Retry-After: 1
    polls = [at for at, method, path, _ in Provider.seen if path == "/v1/videos/video_1"]
    assert len(polls) == 3
    assert all(later - earlier >= 0.6 for earlier, later in itertools.pairwise(polls))
    assert (40, 100) in steps  # the provider's progress
    assert "GET/v1/videos/video_1/content" in times
    assert {auth for _, _, _, auth in Provider.seen} == {f"Bearer {KEY}"}


def test_a_cancel_from_on_step_stops_the_wait(
    provider: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hosted = engine(provider, monkeypatch)

    def cancelled(done: int, total: int) -> None:
        raise Cancelled

    started = time.monotonic()
    with pytest.raises(Cancelled):
        hosted.fetch("video_1", tmp_path / "v.mp4", cancelled)
    assert time.monotonic() - started < 0.5
    assert not (tmp_path / "v.mp4").exists()
