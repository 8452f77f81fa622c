"""The live stream on a real server (uvicorn on a loopback port, a real SQLite file): the job
is moved by the store's own methods, as a worker would, while a client reads the stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelforge.api.auth import new_key, register
from reelforge.jobs.model import Lease, Phase
from tests.events.sse import Reading, read_stream
from tests.service import LEGACY, UNIFIED, Api, running_api, service_settings

BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"}
STEPS = ((20, Phase.GENERATING), (60, Phase.ENCODING), (90, Phase.STORING))
FAST = {"stream_poll_seconds": 0.05, "stream_heartbeat_seconds": 0.2}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(service_settings(tmp_path, **FAST)) as live:
        yield live


def stream_path(route: str, generation_id: str) -> tuple[str, dict[str, str]]:
    if route == "openai":
        return f"/v1/videos/{generation_id}/events", {}
    return route + "/events", {"generation_id": generation_id}


def create(api: Api) -> str:
    response = api.create(BODY)
    response.raise_for_status()
    generation_id: str = response.json()["generation_id"]
    return generation_id


def run(api: Api, steps: int = len(STEPS), *, lease: Lease | None = None) -> Lease:
    """Claim the job (unless ``lease``) and report the first ``steps`` of ``STEPS``."""
    if lease is None:
        claimed = api.store.claim(worker_id="w1", lease_seconds=30)
        assert claimed is not None
        lease = claimed
    for progress, phase in STEPS[:steps]:
        assert api.store.heartbeat(lease, lease_seconds=30, progress=progress, phase=phase)
    return lease


def complete(api: Api, lease: Lease) -> None:
    assert api.store.complete(lease, video_key="videos/v.mp4", credits_used=1.5, meta={})


def in_background(action: Callable[[], Reading]) -> tuple[threading.Thread, list[Reading]]:
    found: list[Reading] = []
    thread = threading.Thread(target=lambda: found.append(action()), daemon=True)
    thread.start()
    return thread, found


def statuses(reading: Reading) -> list[tuple[str, int]]:
    return [(answer["status"], answer["progress"]) for answer in reading.answers]


@pytest.mark.parametrize("route", [LEGACY, UNIFIED, "openai"])
def test_events_arrive_in_order_with_rising_progress_and_end_with_the_terminal_state(
    api: Api, route: str
) -> None:
    generation_id = create(api)
    path, params = stream_path(route, generation_id)
    opened = threading.Event()
    thread, found = in_background(
        lambda: read_stream(api.client, path, params=params, on_open=lambda _: opened.set())
    )
    assert opened.wait(10)
    time.sleep(0.2)  # the stream has sent the job's first event and waits for more
    lease = run(api, steps=0)
    for progress, phase in STEPS:  # each read by the stream before the next is made
        time.sleep(0.1)
        assert api.store.heartbeat(lease, lease_seconds=30, progress=progress, phase=phase)
    complete(api, lease)
    thread.join(10)
    reading = found[0]
    assert reading.ended
    running = "in_progress" if route == "openai" else "generating"
    assert statuses(reading) == [
        ("queued", 0),
        (running, 0),
        (running, 20),
        (running, 60),
        (running, 90),
        ("completed", 100),
    ]
    assert reading.ids == sorted(set(reading.ids))
    assert {event.event for event in reading.events} == {"generation"}
    last = reading.answers[-1]
    if route == "openai":
        assert last == api.client.get(f"/v1/videos/{generation_id}").json()
    else:
        assert last == api.get(generation_id, route)
        assert last["video"]["url"].startswith(api.base_url)


def test_a_reconnect_with_last_event_id_resumes_without_repeats(api: Api) -> None:
    generation_id = create(api)
    path, params = stream_path(UNIFIED, generation_id)
    lease = run(api, steps=2)
    first = read_stream(api.client, path, params=params, until=lambda r: len(r.events) == 3)
    assert not first.ended
    run(api, steps=0, lease=lease)
    api.store.heartbeat(lease, lease_seconds=30, progress=90, phase=Phase.STORING)
    complete(api, lease)
    resumed = read_stream(
        api.client, path, params=params, headers={"Last-Event-ID": str(first.ids[-1])}
    )
    whole = read_stream(api.client, path, params=params)
    assert resumed.ended
    assert whole.ended
    assert first.ids + resumed.ids == whole.ids
    assert first.answers + resumed.answers == whole.answers
    assert statuses(resumed) == [("generating", 60), ("generating", 90), ("completed", 100)]
    after_the_end = read_stream(
        api.client, path, params=params, headers={"Last-Event-ID": str(whole.ids[-1])}
    )
    assert after_the_end.ended
    assert after_the_end.events == []


def test_a_failed_job_ends_the_stream_with_its_error(api: Api) -> None:
    generation_id = create(api)
    lease = run(api, steps=1)
    assert api.store.fail(lease, error_name="EngineFailed", error_message="OOM", credits_used=1)
    path, params = stream_path(LEGACY, generation_id)
    reading = read_stream(api.client, path, params=params)
    assert reading.ended
    assert reading.answers[-1]["error"] == {"name": "EngineFailed", "message": "OOM"}
    openai = read_stream(api.client, f"/v1/videos/{generation_id}/events")
    assert openai.answers[-1]["status"] == "failed"
    assert openai.answers[-1]["error"] == {"code": "engine_failed", "message": "OOM"}


def test_a_quiet_stream_sends_heartbeats(api: Api) -> None:
    generation_id = create(api)
    path, params = stream_path(LEGACY, generation_id)
    reading = read_stream(api.client, path, params=params, until=lambda r: r.heartbeats >= 2)
    assert statuses(reading) == [("queued", 0)]


def other_key(api: Api) -> dict[str, str]:
    key = new_key()
    register(api.store, key, name="tenant B")
    return {"Authorization": f"Bearer {key}"}


def test_another_keys_or_a_missing_generation_is_404_in_the_dialects_shape(api: Api) -> None:
    mine = create(api)
    theirs = other_key(api)
    for route in (LEGACY, UNIFIED):
        for generation_id, headers in ((mine, theirs), ("f" * 32, {})):
            path, params = stream_path(route, generation_id)
            answer = api.client.get(path, params=params, headers=headers)
            assert answer.status_code == 404
            assert answer.json() == {
                "error": {"name": "NotFound", "message": f"no generation {generation_id!r}"}
            }
    answer = api.client.get(f"/v1/videos/{mine}/events", headers=theirs)
    assert answer.status_code == 404
    assert answer.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
    no_key = httpx.get(f"{api.base_url}/v1/videos/{mine}/events")
    assert no_key.status_code == 401


def test_a_bad_last_event_id_is_refused(api: Api) -> None:
    path, params = stream_path(LEGACY, create(api))
    answer = api.client.get(path, params=params, headers={"Last-Event-ID": "seven"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("Last-Event-ID: must be an event id")


def test_streams_beyond_the_limit_get_503_and_a_hang_up_frees_its_place_at_once(
    tmp_path: Path,
) -> None:
    settings = service_settings(tmp_path, max_streams=1, stream_heartbeat_seconds=60)
    with running_api(settings) as api:
        path, params = stream_path(LEGACY, create(api))
        with api.client.stream("GET", path, params=params) as held:
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: dropping the iterator would hang up
            assert next(lines).startswith("id: ")  # the stream is running
            refused = api.client.get(path, params=params)
            assert refused.status_code == 503
            assert refused.json()["error"]["name"] == "Unavailable"
            openai = api.client.get(f"/v1/videos/{params['generation_id']}/events")
            assert (openai.status_code, openai.json()["error"]["type"]) == (503, "server_error")
        # The holder hung up: its place is free long before its 60 s heartbeat would fail.
        deadline = time.monotonic() + 2
        while (answer := _status(api, path, params)) == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer == 200


def _status(api: Api, path: str, params: dict[str, Any]) -> int:
    with api.client.stream("GET", path, params=params) as response:
        return response.status_code


def test_the_stream_routes_are_in_the_openapi_document(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (LEGACY + "/events", UNIFIED + "/events", "/v1/videos/{video_id}/events"):
        assert "text/event-stream" in paths[path]["get"]["responses"]["200"]["content"]
