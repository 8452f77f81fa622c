from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pictures import encoded, textured
from tests.service import Api, running_api, service_settings


@pytest.fixture
def first_frame_only(tmp_path: Path) -> Iterator[Api]:
    registry = tmp_path / "models.toml"
    registry.write_text(
        """
        hailuo = "opener"
        [models.opener]
        engine = "preview"
        last_frame = false
        """
    )
    with running_api(service_settings(tmp_path / "data", models=registry)) as live:
        yield live


def test_models_lists_what_each_served_model_can_do(api: Api) -> None:
    answer = api.client.get("/v2/models")
    assert answer.status_code == 200
    models = {entry["id"]: entry for entry in answer.json()["models"]}
    assert sorted(models) == ["minimax/hailuo-02", "preview"]
    assert models["preview"] == {
        "id": "preview",
        "engine": "preview",
        "text": True,
        "first_frame": True,
        "last_frame": True,
        "last_frame_required": False,
        "audio": False,
        "fps": 25,
        "fps_choices": [8, 60],
        "min_seconds": 1,
        "max_seconds": 20,
        "min_short_side": 256,
        "max_long_side": 2700,
        "request_options": [],
        "durations": [6, 10],
        "resolutions": ["768P", "1080P"],
    }


def test_models_needs_a_key(api: Api) -> None:
    assert api.client.get("/v2/models", headers={"Authorization": ""}).status_code == 401


def test_a_last_frame_for_a_model_that_cannot_use_one_is_refused(first_frame_only: Api) -> None:
    image = "data:image/png;base64," + base64.b64encode(encoded(textured(640, 480))).decode()
    refused = first_frame_only.create(
        {"model": "minimax/hailuo-02", "prompt": "x", "last_image_url": image}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "last_image_url: model 'minimax/hailuo-02' cannot end on an image"
    )
    accepted = first_frame_only.create(
        {"model": "opener", "prompt": "x", "first_frame_image": image}
    )
    assert accepted.status_code == 200
