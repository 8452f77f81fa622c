"""Image URLs end to end: API → job store → a real worker process → the guarded fetch.

Each class runs one API and one worker process for all its tests, on purpose: every test
checks that its job was handled by that same, still living, worker, so a URL that crashed
the worker would fail every test after it (and the last test of each class is a job that
must complete).

Not covered here: a redirect from an allowed first hop to loopback. Under the default
policy no server on this machine can be an allowed first hop (they are all non-public),
and the trusting policy allows the redirect's target too; ``tests/media/test_fetch.py``
covers it at the fetcher's level with an allow-list for the first hop.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import av
import pytest

from tests.canary import Canary, open_canary
from tests.pictures import encoded, textured
from tests.service import LEGACY, UNIFIED, Api, running_api, running_workers, service_settings

FIELD = "first_frame_image"
PORTRAIT = encoded(textured(480, 720))  # 2:3, so the video is 768x1152
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Service:
    api: Api
    worker: BaseProcess

    def run(self, body: dict[str, Any], route: str = LEGACY) -> dict[str, Any]:
        """Create a generation, wait for its end, and check the one worker handled it."""
        response = self.api.create(body, route=route)
        assert response.status_code == 200, response.text
        created = response.json()
        generation_id = created.get("generation_id") or created["id"]
        done = self.api.wait(generation_id, timeout=30)
        job = self.api.store.get(generation_id)
        assert job is not None
        assert job.worker_id is not None
        assert job.worker_id.split(":")[1] == str(self.worker.pid)
        assert self.worker.is_alive()
        return done


def serving(data_dir: Path, **overrides: Any) -> Iterator[Service]:
    settings = service_settings(data_dir, **overrides)
    with running_api(settings) as api, running_workers(settings) as [worker]:
        yield Service(api, worker)


def legacy(url: str) -> dict[str, Any]:
    return {"model": "preview", "prompt": "A portrait", FIELD: url}


# --- the default policy: no request reaches loopback -------------------------------------


@pytest.fixture(params=["own port", "port 80"])
def canary(request: pytest.FixtureRequest) -> Iterator[Canary]:
    """On its own free port (which the default policy refuses before resolving), or on port
    80 (allowed, so the address check is what refuses; needs the right to bind it)."""
    if request.param == "own port":
        yield from open_canary()
        return
    try:
        watcher = Canary(80)
    except OSError as exc:
        pytest.skip(f"cannot listen on port 80 of loopback here ({exc})")
    yield watcher
    watcher.close()


LOOPBACK_SPELLINGS = [
    ("http://127.0.0.1:{port}/a.png", "127.0.0.1"),
    ("http://localhost:{port}/", "localhost"),
    ("http://0x7f000001:{port}/", "0x7f000001"),
    ("http://2130706433:{port}/", "2130706433"),
    ("http://[::ffff:127.0.0.1]:{port}/", "::ffff:127.0.0.1"),
]


def refusal(host: str, port: int) -> str:
    """The reason (a pattern) the default policy gives for ``host`` on ``port``."""
    if port != 80:
        return f"port {port} of host {host} is not allowed"
    return rf"host {re.escape(host)} is not allowed"


@pytest.fixture(scope="class")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with the default fetch policy (only public addresses, ports 80/443)."""
    yield from serving(tmp_path_factory.mktemp("default-policy"))


class TestDefaultPolicy:
    @pytest.mark.parametrize(("template", "host"), LOOPBACK_SPELLINGS)
    def test_loopback_is_refused_without_a_connection(
        self, guarded: Service, canary: Canary, template: str, host: str
    ) -> None:
        done = guarded.run(legacy(template.format(port=canary.port)))
        assert done["status"] == "error", done
        assert done["error"]["name"] == "ImageFetchFailed"
        assert re.fullmatch(f"{FIELD}: {refusal(host, canary.port)}", done["error"]["message"])
        assert canary.connections() == 0

    @pytest.mark.parametrize(
        ("route", "field", "other"),
        [(UNIFIED, "image_url", None), (LEGACY, "last_image_url", FIELD)],
    )
    def test_the_message_names_the_field_the_client_used(
        self, guarded: Service, canary: Canary, route: str, field: str, other: str | None
    ) -> None:
        body = {"model": "preview", "prompt": "x", field: f"http://127.0.0.1:{canary.port}/"}
        if other is not None:  # a valid first frame, kept at submit, so the last one fails
            body[other] = "data:image/png;base64," + base64.b64encode(PORTRAIT).decode("ascii")
        done = guarded.run(body, route=route)
        assert done["error"]["name"] == "ImageFetchFailed"
        reason = refusal("127.0.0.1", canary.port)
        assert re.fullmatch(f"{field}: {reason}", done["error"]["message"])
        assert canary.connections() == 0

    def test_the_worker_still_completes_a_job(self, guarded: Service) -> None:
        done = guarded.run({"model": "preview", "prompt": "A lighthouse at dusk"})
        assert done["status"] == "completed", done


# --- the trusting policy: what comes back is checked ------------------------------------


class Site(ThreadingHTTPServer):
    """An HTTP/1.0 server on 127.0.0.1 (each answer ends when the connection closes)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.stop = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Handler(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading, as it should

    def _answer(self) -> None:
        if self.path == "/portrait.png":
            self._head(str(len(PORTRAIT)))
            self.wfile.write(PORTRAIT)
        elif self.path == "/page.png":  # a web page, whatever its Content-Type says
            page = b"<html><body>not a picture</body></html>"
            self._head(str(len(page)))
            self.wfile.write(page)
        elif self.path == "/huge.png":  # 21 MiB with no Content-Length: only the cap stops it
            self._head(None)
            self.wfile.write(PNG_SIGNATURE)
            for _ in range(21):
                self.wfile.write(bytes(MIB))
        elif self.path == "/drip.png":  # one byte every 0.2 s
            self._head(str(MIB))
            while not self.server.stop.wait(0.2):
                self.wfile.write(b"\x89")
                self.wfile.flush()
        else:
            self.send_error(404)

    def _head(self, length: str | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="class")
def trusting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service allowed to fetch from loopback, with a fetch deadline of 1 s."""
    directory = tmp_path_factory.mktemp("trusting-policy")
    yield from serving(directory, fetch_allow_private=True, fetch_deadline_seconds=1.0)


@pytest.fixture(scope="class")
def site() -> Iterator[Site]:
    server = Site()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


class TestTrustingPolicy:
    def test_the_canary_sees_a_fetch_the_policy_allows(
        self, trusting: Service, canary: Canary
    ) -> None:
        """The control: a connection that the policy lets through does reach the canary."""
        done = trusting.run(legacy(f"http://127.0.0.1:{canary.port}/"))
        assert done["error"]["name"] == "ImageFetchFailed"
        assert canary.connections() == 1

    @pytest.mark.parametrize(
        ("path", "name", "reason"),
        [
            ("/page.png", "InvalidImage", "image is not a JPG/JPEG or PNG file"),
            (
                "/huge.png",
                "ImageFetchFailed",
                "the body from host 127.0.0.1 is larger than 20971520 bytes",
            ),
            (
                "/drip.png",
                "ImageFetchFailed",
                "no complete answer from host 127.0.0.1 within the deadline of 1 s",
            ),
        ],
    )
    def test_a_bad_answer_ends_the_generation_in_error(
        self, trusting: Service, site: Site, path: str, name: str, reason: str
    ) -> None:
        started = time.monotonic()
        done = trusting.run(legacy(f"http://127.0.0.1:{site.port}{path}"))
        assert time.monotonic() - started < 5.0
        assert done["status"] == "error", done
        assert done["error"] == {"name": name, "message": f"{FIELD}: {reason}"}

    def test_a_png_from_loopback_gives_a_video_of_its_aspect(
        self, trusting: Service, site: Site
    ) -> None:
        done = trusting.run(legacy(f"http://127.0.0.1:{site.port}/portrait.png"))
        assert done["status"] == "completed", done
        video = trusting.api.client.get(done["video"]["url"])
        assert video.status_code == 200
        path = trusting.api.settings.data_dir / "portrait.mp4"
        path.write_bytes(video.content)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height, stream.frames) == (768, 1152, 150)
