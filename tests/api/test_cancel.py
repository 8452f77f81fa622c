from __future__ import annotations

import time

import httpx

from reelforge.api.auth import register
from tests.service import LEGACY, UNIFIED, Api


def test_cancel_a_queued_generation(api: Api) -> None:
    created = api.create({"model": "preview", "prompt": "x"}).json()
    answer = api.client.delete(UNIFIED, params={"generation_id": created["generation_id"]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "error"
    assert body["error"] == {"name": "Cancelled", "message": "cancelled by the client"}
    assert api.get(created["generation_id"])["status"] == "error"


def test_cancel_a_missing_generation_is_404(api: Api) -> None:
    answer = api.client.delete(LEGACY, params={"generation_id": "nope"})
    assert answer.status_code == 404
    assert answer.json()["error"]["name"] == "NotFound"


def test_cancel_someone_elses_generation_is_404_and_leaves_it_alone(api: Api) -> None:
    created = api.create({"model": "preview", "prompt": "x"}).json()["generation_id"]
    register(api.store, "rf_another-tenant-key-0123456789abcdef", name="other")
    other = {"Authorization": "Bearer rf_another-tenant-key-0123456789abcdef"}
    with httpx.Client(base_url=api.base_url, headers=other) as intruder:
        answer = intruder.delete(UNIFIED, params={"generation_id": created})
        assert answer.status_code == 404
        assert answer.json()["error"]["name"] == "NotFound"
    job = api.store.get(created)
    assert job is not None
    assert (job.status.value, job.cancel_requested_at) == ("queued", None)
    assert api.get(created)["status"] == "queued"


def test_cancel_a_running_generation_stops_it_without_a_video(service: Api) -> None:
    created = service.create({"model": "preview", "prompt": "x [Pan left]", "duration": 10})
    generation_id = created.json()["generation_id"]
    deadline = time.monotonic() + 30
    while service.get(generation_id)["progress"] < 5:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    service.client.delete(LEGACY, params={"generation_id": generation_id})
    done = service.wait(generation_id, timeout=20)
    assert done["status"] == "error"
    assert done["error"]["name"] == "Cancelled"
    assert done["video"] is None
    assert done["progress"] < 100
    assert list((service.settings.data_dir / "videos").iterdir()) == []
