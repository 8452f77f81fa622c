"""Admission on the wire: ``Idempotency-Key`` on every create route, per-key limits and the
service's queue cap, each in its dialect's shape, on one API and on two sharing a database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from reelforge.api.auth import hash_key
from reelforge.jobs.model import ApiKey
from tests.pictures import encoded, textured
from tests.postgres import throwaway_schema
from tests.service import (
    LEGACY,
    TEST_KEY,
    UNIFIED,
    Api,
    free_port,
    running_api,
    service_settings,
)

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API is scheduled:DeprecationWarning")
ONE_S: Any = "1"  # the SDK's types list OpenAI's lengths; the preview model makes 1 s
HAILUO = {"model": "minimax/hailuo-02", "prompt": "a fox", "duration": 6}
ROUTES: dict[str, tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]] = {
    "hailuo-legacy": (LEGACY, HAILUO, lambda answer: answer["generation_id"]),
    "hailuo-unified": (UNIFIED, HAILUO, lambda answer: answer["id"]),
    "minimax": (
        "/v1/video_generation",
        {"model": "MiniMax-Hailuo-02", "prompt": "a fox", "duration": 6},
        lambda answer: answer["task_id"],
    ),
    "openai": (
        "/v1/videos",
        {"model": "minimax/hailuo-02", "prompt": "a fox", "seconds": "6"},
        lambda answer: answer["id"],
    ),
}


def caller(api: Api) -> ApiKey:
    key = api.store.key_for_hash(hash_key(TEST_KEY))
    assert key is not None
    return key


def jobs_of(api: Api) -> int:
    return len(api.store.list(owner=caller(api).id, limit=100))


def refusal_name(route: str, response: httpx.Response) -> str:
    """The error's name (or MiniMax's code) from each dialect's envelope."""
    body = response.json()
    if route.startswith("/v2/"):
        return str(body["error"]["name"])
    if route == "/v1/videos":
        return f"{body['error']['type']}/{body['error']['code']}/{body['error']['param']}"
    return str(body["base_resp"]["status_code"])


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The settings of each store in turn: SQLite in the data dir, a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield {}
        return
    with throwaway_schema() as url:
        yield {"database_url": url}


@pytest.fixture
def api(tmp_path: Path, database: dict[str, Any]) -> Iterator[Api]:
    with running_api(service_settings(tmp_path, **database)) as live:
        yield live


# --- idempotency ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", sorted(ROUTES))
def test_a_repeat_gets_the_first_answer_and_another_body_is_refused(api: Api, dialect: str) -> None:
    route, body, id_of = ROUTES[dialect]
    first = api.client.post(route, json=body, headers={"Idempotency-Key": "k-1"})
    again = api.client.post(route, json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, id_of(first.json())) == (again.status_code, id_of(again.json()))
    other = api.client.post(
        route, json={**body, "prompt": "a wolf"}, headers={"Idempotency-Key": "k-1"}
    )
    expected = {
        LEGACY: (422, "IdempotencyMismatch"),
        UNIFIED: (422, "IdempotencyMismatch"),
        "/v1/videos": (422, "invalid_request_error/idempotency_mismatch/Idempotency-Key"),
        "/v1/video_generation": (200, "1000"),
    }[route]
    assert (other.status_code, refusal_name(route, other)) == expected
    assert "Idempotency-Key" in other.text
    assert jobs_of(api) == 1
    fresh = api.client.post(route, json=body, headers={"Idempotency-Key": "k-2"})
    assert id_of(fresh.json()) != id_of(first.json())


def test_a_multipart_repeat_matches_on_the_parsed_request(api: Api) -> None:
    image = encoded(textured(640, 360, seed=1))
    ids = set()
    for _ in range(2):  # httpx draws a new multipart boundary for each request
        answer = api.client.post(
            "/v1/videos",
            data={"model": "preview", "prompt": "still", "seconds": "1", "size": "640x360"},
            files={"input_reference": ("ref.png", image, "image/png")},
            headers={"Idempotency-Key": "upload-1"},
        )
        assert answer.status_code == 200, answer.text
        ids.add(answer.json()["id"])
    assert len(ids) == 1
    assert jobs_of(api) == 1


def test_a_key_longer_than_255_characters_is_refused(api: Api) -> None:
    answer = (
        api.create(HAILUO | {}, route=UNIFIED)
        if False
        else api.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "k" * 256})
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("Idempotency-Key: must be 1 to 255")


def test_a_refused_create_leaves_its_key_free(tmp_path: Path, database: dict[str, Any]) -> None:
    with running_api(service_settings(tmp_path, key_max_queued=1, **database)) as api:
        bad = api.client.post(
            UNIFIED, json={**HAILUO, "duration": 7}, headers={"Idempotency-Key": "k"}
        )
        assert bad.status_code == 400
        good = api.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "k"})
        assert good.status_code == 200
        limited = api.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "k2"})
        assert limited.status_code == 429
        api.client.delete(UNIFIED, params={"generation_id": good.json()["id"]})
        retried = api.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "k2"})
        assert retried.status_code == 200
        assert retried.json()["id"] != good.json()["id"]


def test_a_key_still_being_admitted_answers_409_with_retry_after(api: Api) -> None:
    api.store.reserve_idempotency(owner=caller(api).id, key="busy", fingerprint="in flight")
    answer = api.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "busy"})
    assert answer.status_code == 409
    assert answer.json()["error"]["name"] == "IdempotencyConflict"
    assert answer.headers["Retry-After"] == "1"
    assert jobs_of(api) == 0


def test_concurrent_requests_with_one_key_make_one_job(api: Api) -> None:
    answers: list[httpx.Response] = []
    start = threading.Barrier(6)

    def send() -> None:
        with httpx.Client(base_url=api.base_url, headers=api.client.headers) as client:
            start.wait()
            answers.append(client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {answer.status_code for answer in answers} <= {200, 409}
    assert len({answer.json()["id"] for answer in answers if answer.status_code == 200}) == 1
    assert jobs_of(api) == 1


def test_the_openai_sdk_retries_a_409_to_the_job(api: Api) -> None:
    owner = caller(api).id
    api.store.reserve_idempotency(owner=owner, key="sdk-1", fingerprint="in flight")
    statuses: list[int] = []

    def seen(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 409:  # the first request's process gives the key up
            release = {"owner": owner, "key": "sdk-1"}
            threading.Timer(0.2, api.store.abandon_idempotency, kwargs=release).start()

    with openai.DefaultHttpxClient(event_hooks={"response": [seen]}) as http:
        sdk = openai.OpenAI(
            base_url=f"{api.base_url}/v1", api_key=TEST_KEY, max_retries=2, http_client=http
        )
        video = sdk.videos.create(
            model="preview",
            prompt="a fox",
            seconds=ONE_S,
            extra_headers={"Idempotency-Key": "sdk-1"},
        )
        assert statuses == [409, 200]
        assert video.status == "queued"
        assert jobs_of(api) == 1
        again = sdk.videos.create(
            model="preview",
            prompt="a fox",
            seconds=ONE_S,
            extra_headers={"Idempotency-Key": "sdk-1"},
        )
        assert again.id == video.id


# --- limits -----------------------------------------------------------------------------


def ratelimit_fields(response: httpx.Response) -> tuple[int, str, str]:
    return (
        int(response.headers["Retry-After"]),
        response.headers["RateLimit-Policy"],
        response.headers["RateLimit"],
    )


@pytest.mark.parametrize("dialect", sorted(ROUTES))
def test_over_its_rpm_a_key_gets_429_in_its_dialect(
    tmp_path: Path, database: dict[str, Any], dialect: str
) -> None:
    route, body, id_of = ROUTES[dialect]
    with running_api(service_settings(tmp_path, key_rpm=2, **database)) as api:
        first = api.client.post(route, json=body, headers={"Idempotency-Key": "one"})
        api.client.post(route, json=body)
        refused = api.client.post(route, json=body)
        replay = api.client.post(route, json=body, headers={"Idempotency-Key": "one"})
    expected = {
        LEGACY: (429, "RateLimited"),
        UNIFIED: (429, "RateLimited"),
        "/v1/videos": (429, "rate_limit_error/rate_limited/None"),
        "/v1/video_generation": (200, "1002"),
    }[route]
    assert (refused.status_code, refusal_name(route, refused)) == expected
    wait, policy, state = ratelimit_fields(refused)
    assert 55 <= wait <= 60
    assert policy == '"rpm";q=2;w=60'
    assert state == f'"rpm";r=0;t={wait}'
    assert id_of(replay.json()) == id_of(first.json())  # a repeat is not a new create


def test_max_queued_counts_queued_jobs_and_a_cancel_frees_a_place(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    with running_api(service_settings(tmp_path, key_max_queued=1, **database)) as api:
        first = api.client.post(UNIFIED, json=HAILUO).json()["id"]
        refused = api.client.post(UNIFIED, json=HAILUO)
        assert refused.status_code == 429
        assert ratelimit_fields(refused) == (
            10,
            '"queued";q=1;qu="concurrent-requests"',
            '"queued";r=0;t=10',
        )
        api.client.delete(UNIFIED, params={"generation_id": first})
        assert api.client.post(UNIFIED, json=HAILUO).status_code == 200


def test_the_service_queue_cap_answers_503_queue_full(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    with running_api(service_settings(tmp_path, max_queued=2, **database)) as api:
        for _ in range(2):
            assert api.client.post(UNIFIED, json=HAILUO).status_code == 200
        full = api.client.post(UNIFIED, json=HAILUO)
        openai_full = api.client.post("/v1/videos", json=ROUTES["openai"][1])
    assert (full.status_code, full.json()["error"]["name"]) == (503, "QueueFull")
    assert full.headers["Retry-After"] == "10"
    assert (openai_full.status_code, openai_full.json()["error"]["type"]) == (503, "server_error")


def test_a_keys_own_daily_seconds_from_the_cli(tmp_path: Path, database: dict[str, Any]) -> None:
    env = {**os.environ, "REELFORGE_DATA_DIR": str(tmp_path)}
    if database:
        env["REELFORGE_DATABASE_URL"] = database["database_url"]
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "reelforge",
            "keys",
            "create",
            "--name",
            "t",
            "--daily-video-seconds",
            "10",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    updated = subprocess.run(
        [sys.executable, "-m", "reelforge", "keys", "update", key[:8], "--rpm", "50"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "rpm=50 daily_video_seconds=10" in updated.stdout
    with running_api(service_settings(tmp_path, **database)) as api:
        headers = {"Authorization": f"Bearer {key}"}
        first = api.client.post(UNIFIED, json=HAILUO, headers=headers)
        refused = api.client.post(UNIFIED, json=HAILUO, headers=headers)
        assert refused.status_code == 429, refused.text
        assert "10 s of video a UTC day" in refused.json()["error"]["message"]
        assert re.fullmatch(r'"daily";r=4;t=\d+', refused.headers["RateLimit"])
        assert '"daily";q=10;w=86400;qu="video-seconds"' in refused.headers["RateLimit-Policy"]
        # Cancelled before it started, the first job's seconds no longer count.
        api.client.delete(UNIFIED, params={"generation_id": first.json()["id"]}, headers=headers)
        assert api.client.post(UNIFIED, json=HAILUO, headers=headers).status_code == 200


# --- two API processes on one database --------------------------------------------------


def test_two_apis_share_idempotency_keys_and_rate_limits(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, key_rpm=3)
    second = settings.model_copy(update={"port": free_port()})
    with running_api(settings) as one, running_api(second) as two:
        first = one.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "x"})
        again = two.client.post(UNIFIED, json=HAILUO, headers={"Idempotency-Key": "x"})
        assert again.json()["id"] == first.json()["id"]
        assert two.client.post(UNIFIED, json=HAILUO).status_code == 200
        assert one.client.post(UNIFIED, json=HAILUO).status_code == 200
        assert two.client.post(UNIFIED, json=HAILUO).status_code == 429
        assert one.client.post(UNIFIED, json=HAILUO).status_code == 429
