"""Errors are rendered in one place, in the envelope of the route's dialect; an unexpected
failure is a 500 in that envelope, logged with its traceback, and the service goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from reelforge.api.app import Services, create_app
from reelforge.jobs.model import Job
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.runtime import load_models, open_storage
from reelforge.startup import ensure_key
from tests.service import LEGACY, TEST_KEY, service_settings

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


class BrokenStore(SQLiteJobStore):
    """A real store whose reads of one job id fail as a bug would."""

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        if job_id == "boom":
            raise RuntimeError("a bug in the store")
        return super().get(job_id, owner=owner)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The app in-process (no socket), on a store with a bug."""
    settings = service_settings(tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = BrokenStore(settings.database_path)
    ensure_key(settings, store)
    app = create_app(Services(settings, store, open_storage(settings), load_models(settings)))
    with TestClient(app, raise_server_exceptions=False, headers=AUTH) as client:
        yield client
    store.close()


def test_an_unexpected_failure_is_a_logged_500_in_the_dialects_envelope(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="reelforge.api"):
        answer = client.get(LEGACY, params={"generation_id": "boom"})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": {
            "name": "InternalError",
            "message": "the server failed; the error has been logged",
        }
    }
    assert "a bug in the store" not in answer.text  # internals stay in the log
    assert any("a bug in the store" in (record.exc_text or "") for record in caplog.records)
    # the service goes on
    assert client.get(LEGACY, params={"generation_id": "other"}).status_code == 404


def test_routes_outside_every_dialect_answer_in_the_default_envelope(
    client: TestClient,
) -> None:
    answer = client.get("/files/videos/x.mp4", params={"expires": "1", "signature": "0" * 64})
    assert answer.status_code in (403, 404, 410)
    assert set(answer.json()["error"]) == {"name", "message"}
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["name"] == "HTTPError"


def test_a_method_not_allowed_says_which_are(client: TestClient) -> None:
    answer = client.put("/healthz")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert answer.json()["error"]["name"] == "HTTPError"


def test_refusals_name_the_field_in_the_routes_own_words(client: TestClient) -> None:
    unified = client.post(
        "/v2/video/generations",
        json={"model": "preview", "prompt": "x", "image_url": "data:image/png;base64,@@"},
    )
    assert unified.status_code == 400
    assert unified.json()["error"]["message"].startswith("image_url: ")
    legacy = client.post(
        LEGACY, json={"model": "preview", "prompt": "x", "duration": 10, "resolution": "1080P"}
    )
    assert legacy.status_code == 400
    assert (
        legacy.json()["error"]["message"] == "duration: 10 s is available only at 768P, not 1080P"
    )


def test_the_poll_is_answered_the_same_behind_a_proxys_root_path(tmp_path: Path) -> None:
    """Under a ``root_path`` the hot route's path does not match; FastAPI's route answers."""
    settings = service_settings(tmp_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = BrokenStore(settings.database_path)
    ensure_key(settings, store)
    app = create_app(Services(settings, store, open_storage(settings), load_models(settings)))
    with TestClient(app, headers=AUTH) as direct:
        created = direct.post(LEGACY, json={"model": "preview", "prompt": "x"}).json()
        params = {"generation_id": created["generation_id"]}
        hot = direct.get(LEGACY, params=params)
    with TestClient(app, headers=AUTH, root_path="/proxied") as proxied:
        routed = proxied.get(f"/proxied{LEGACY}", params=params)
        missing = proxied.get(f"/proxied{LEGACY}", params={"generation_id": "nope"})
    assert (hot.status_code, routed.status_code) == (200, 200)
    assert routed.json() == hot.json()
    assert missing.status_code == 404
    assert missing.json()["error"]["name"] == "NotFound"
    store.close()
