"""One real service per test module (the API and one worker process, allowed to fetch image
URLs from loopback) and a loopback site serving a picture and a web page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.client.inputs import PAGE, PORTRAIT
from tests.client.loopback import Answer, ScriptedServer, in_turn, serving
from tests.pictures import encoded
from tests.service import Api, running_api, running_workers, service_settings


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("service")
    settings = service_settings(directory, fetch_allow_private=True, fetch_deadline_seconds=5.0)
    with running_api(settings) as api, running_workers(settings):
        yield api


@pytest.fixture(scope="module")
def site() -> Iterator[ScriptedServer]:
    """``/portrait.png`` (PORTRAIT) and ``/page.png``: a web page, whatever its name says."""
    with serving() as server:
        png = Answer(200, encoded(PORTRAIT), {"Content-Type": "image/png"})
        server.route("GET", "/portrait.png", in_turn(png))
        server.route("GET", "/page.png", in_turn(Answer(200, PAGE, {"Content-Type": "image/png"})))
        yield server
