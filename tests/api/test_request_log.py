"""One log line per request (method, route template, status, ms, key id, request id) as
text or JSON, and the ``X-Request-Id`` kept and echoed, or made."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from reelforge.api.app import Services, create_app
from reelforge.logs import RequestLines
from reelforge.metrics import Metrics
from reelforge.runtime import load_models, open_storage, open_store
from reelforge.startup import ensure_key
from tests.service import LEGACY, TEST_KEY, service_settings

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MADE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class App:
    client: TestClient
    key_id: str
    lines: RequestLines
    buffer: io.StringIO

    def logged(self) -> list[str]:
        self.lines.flush()
        return self.buffer.getvalue().splitlines()


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[App]:
    """The app in-process, its request log (text, or ``json`` as the param) in a buffer."""
    settings = service_settings(tmp_path)
    store = open_store(settings)
    ensure_key(settings, store)
    buffer = io.StringIO()
    lines = RequestLines(getattr(request, "param", "text"), stream=buffer)
    services = Services(
        settings,
        store,
        open_storage(settings),
        load_models(settings),
        metrics=Metrics(CollectorRegistry()),
        request_lines=lines,
    )
    with TestClient(create_app(services), client=("127.0.0.1", 50000)) as client:
        yield App(client, store.list_keys()[0].id, lines, buffer)
    store.close()


def test_text_line_per_request(app: App) -> None:
    """A create, the hot poll and an unknown path: one line each, with the route's template
    (never the query), the status, the time, the key id and the request id."""
    client, key_id = app.client, app.key_id
    created = client.post(LEGACY, json={"model": "minimax/hailuo-02", "prompt": "x"}, headers=AUTH)
    generation = created.json()["generation_id"]
    client.get(
        LEGACY, params={"generation_id": generation}, headers={**AUTH, "X-Request-Id": "r-1"}
    )
    client.get("/nowhere/at/all?secret=1")
    lines = app.logged()
    assert len(lines) == 3
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} reelforge\.access"
    assert re.fullmatch(
        rf"{stamp} POST {LEGACY} 200 \d+\.\dms key={key_id} request=[0-9a-f]{{32}}", lines[0]
    )
    assert re.fullmatch(rf"{stamp} GET {LEGACY} 200 \d+\.\dms key={key_id} request=r-1", lines[1])
    assert re.fullmatch(rf"{stamp} GET <unmatched> 404 \d+\.\dms key=- request=\S+", lines[2])
    assert generation not in app.buffer.getvalue()
    assert "secret" not in app.buffer.getvalue()


@pytest.mark.parametrize("app", ["json"], indirect=True)
def test_json_lines(app: App) -> None:
    client, key_id = app.client, app.key_id
    client.get("/v2/models", headers=AUTH)
    client.get("/v2/models", headers={"X-Request-Id": "abc.DEF:9_-"})
    first, second = (json.loads(line) for line in app.logged())
    assert first["logger"] == "reelforge.access"
    assert first["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["method"] == "GET"
    assert second["route"] == "/v2/models"
    assert second["status"] == 401
    assert second["key_id"] == "-"
    assert second["request_id"] == "abc.DEF:9_-"
    assert isinstance(second["ms"], float)
    assert first["key_id"] == key_id
    assert first["status"] == 200


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-42.a:b_C", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("two words", False),
        ("new\nline", False),
        ("<script>", False),
        (None, False),
    ],
)
def test_request_id_is_kept_or_made(app: App, sent: str | None, kept: bool) -> None:
    """A safe id of 1 to 128 characters comes back as sent; any other is replaced by a
    made one (32 hex digits), on answers of every kind."""
    client = app.client
    headers = {} if sent is None else {"X-Request-Id": sent}
    for answer in (
        client.get("/healthz", headers=headers),
        client.get("/v2/models", headers=headers),
    ):
        echoed = answer.headers["x-request-id"]
        if kept:
            assert echoed == sent
        else:
            assert MADE_ID.fullmatch(echoed)
