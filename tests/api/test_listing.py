"""The Hailuo dialect's listing and purge (reelforge's extensions), on both routes of a real
server on loopback: ``GET`` without ``generation_id`` pages the key's generations newest
first; ``DELETE …&purge=true`` cancels, then deletes the job with its video and inputs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelforge.api.auth import register
from reelforge.runtime import open_storage
from tests.pictures import encoded, textured
from tests.service import LEGACY, UNIFIED, Api

OTHER_KEY = "rf_another-tenant-key-0123456789abcdef"


def make(api: Api, count: int, route: str = LEGACY) -> list[str]:
    """``count`` queued generations, oldest first."""
    ids = []
    for n in range(count):
        answer = api.create({"model": "preview", "prompt": f"clip {n}"}, route).json()
        ids.append(answer["generation_id"] if route == LEGACY else answer["id"])
    return ids


def page(api: Api, route: str, **params: Any) -> dict[str, Any]:
    response = api.client.get(route, params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
def test_a_get_without_an_id_pages_the_keys_generations_newest_first(api: Api, route: str) -> None:
    made = make(api, 3, LEGACY) + make(api, 2, UNIFIED)
    first = page(api, route, limit=2)
    assert [g["id"] for g in first["data"]] == made[:2:-1][:2] == [made[4], made[3]]
    assert (first["has_more"], first["last_id"]) == (True, made[3])
    assert first["data"][0] == api.get(made[4])  # each entry is the poll's answer
    rest = page(api, route, limit=2, after=first["last_id"])
    assert [g["id"] for g in rest["data"]] == [made[2], made[1]]
    last = page(api, route, limit=2, after=rest["last_id"])
    assert ([g["id"] for g in last["data"]], last["has_more"]) == ([made[0]], False)
    everything = page(api, route)
    assert len(everything["data"]) == 5
    assert not everything["has_more"]


def test_a_key_lists_only_its_own(api: Api) -> None:
    make(api, 2)
    register(api.store, OTHER_KEY, name="other")
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}) as c:
        answer = c.get(UNIFIED).json()
    assert answer == {"data": [], "has_more": False, "last_id": None}


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1", "2.5"])
def test_a_bad_limit_is_refused_naming_it(api: Api, limit: str) -> None:
    response = api.client.get(LEGACY, params={"limit": limit})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("limit: ")


def test_listing_needs_a_key(api: Api) -> None:
    assert httpx.get(f"{api.base_url}{LEGACY}").status_code == 401


def test_a_plain_delete_still_only_cancels(api: Api) -> None:
    (made,) = make(api, 1)
    answer = api.client.delete(LEGACY, params={"generation_id": made, "purge": "false"})
    assert answer.json()["status"] == "error"
    assert api.get(made)["error"]["name"] == "Cancelled"


def completed_with_files(api: Api) -> tuple[str, Path, Path]:
    """A generation made with a first frame, completed as a worker would: its id, its stored
    input and its stored video."""
    image = encoded(textured(480, 320))
    first = base64.b64encode(image).decode()
    made = api.create({"model": "preview", "prompt": "p", "first_frame_image": first}).json()
    lease = api.store.claim(worker_id="w", lease_seconds=30)
    assert lease is not None
    assert lease.job_id == made["generation_id"]
    storage = open_storage(api.settings)
    source = storage.scratch / "clip.mp4"
    source.write_bytes(b"not really an mp4")
    video_key = storage.save_video(f"{lease.job_id}-1", source)
    assert api.store.complete(lease, video_key=video_key, credits_used=1, meta={})
    (input_key,) = lease.job.request.input_keys
    root = api.settings.data_dir
    return lease.job_id, root / input_key, root / video_key


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
def test_a_purge_deletes_the_generation_its_video_and_inputs(api: Api, route: str) -> None:
    made, stored_input, video = completed_with_files(api)
    assert stored_input.exists()
    assert video.exists()
    answer = api.client.delete(route, params={"generation_id": made, "purge": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": made, "deleted": True}
    assert not stored_input.exists()
    assert not video.exists()
    assert api.client.get(route, params={"generation_id": made}).status_code == 404
    assert page(api, route)["data"] == []
    again = api.client.delete(route, params={"generation_id": made, "purge": "true"})
    assert again.status_code == 404


def test_a_purge_of_a_queued_generation_cancels_it(api: Api) -> None:
    (made,) = make(api, 1)
    answer = api.client.delete(UNIFIED, params={"generation_id": made, "purge": "true"})
    assert answer.json() == {"id": made, "deleted": True}
    assert api.store.claim(worker_id="w", lease_seconds=30) is None
    kinds = [event.kind.value for event in api.store.events_after(0, job_id=made)]
    assert kinds == ["queued", "cancelled", "deleted"]


def test_a_purge_of_another_keys_generation_is_404(api: Api) -> None:
    (made,) = make(api, 1)
    register(api.store, OTHER_KEY, name="other")
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}) as c:
        answer = c.delete(LEGACY, params={"generation_id": made, "purge": "true"})
    assert answer.status_code == 404
    assert api.get(made)["status"] == "queued"
