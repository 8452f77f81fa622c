"""Every create rule of the contract, refused at the boundary with a status and a message
that starts with the field at fault (in the dialect's own name), on a live API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reelforge.api.auth import hash_key
from reelforge.contract import Status
from reelforge.request import ImageRef, JobRequest, Resolution
from tests.pictures import encoded, textured
from tests.service import LEGACY, TEST_KEY, UNIFIED, Api, running_api, service_settings

MODEL = "minimax/hailuo-02"
SMALL_LIMIT = 2048
"""``max_body_bytes`` of the ``small_api`` fixture (the settings' floor is 1024)."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API (no worker) for the module: each test reads back only the jobs it made."""
    with running_api(service_settings(tmp_path_factory.mktemp("validation"))) as live:
        yield live


def png_base64(width: int = 640, height: int = 480, fmt: str = "PNG") -> str:
    return base64.b64encode(encoded(textured(width, height), fmt)).decode("ascii")


def refused(api: Api, body: dict[str, Any], route: str = LEGACY) -> dict[str, str]:
    """The error of a create that must be refused with 400."""
    response = api.create(body, route=route)
    assert response.status_code == 400, response.text
    error: dict[str, str] = response.json()["error"]
    return error


def accepted(api: Api, body: dict[str, Any], route: str = LEGACY) -> JobRequest:
    """The stored request of a create that must be accepted."""
    response = api.create(body, route=route)
    assert response.status_code == 200, response.text
    answer = response.json()
    job = api.store.get(answer["generation_id"] if route == LEGACY else answer["id"])
    assert job is not None
    return job.request


def test_a_valid_request_is_queued_and_stored(api: Api) -> None:
    response = api.create({"model": MODEL, "prompt": "A lighthouse at dusk [Zoom in]"})
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"generation_id", "status"}
    assert answer["status"] == "queued"
    job = api.store.get(answer["generation_id"])
    assert job is not None
    owner = api.store.key_for_hash(hash_key(TEST_KEY))
    assert owner is not None
    assert (job.owner, job.model, job.status) == (owner.id, MODEL, Status.QUEUED)
    assert job.request == JobRequest(
        prompt="A lighthouse at dusk [Zoom in]",
        duration_s=6,
        size=Resolution.P768,
        prompt_optimizer=True,
        seed=None,
    )
    assert (job.dialect, job.callback_url, job.lora) == ("hailuo", None, None)


# --- model -------------------------------------------------------------------------------


def test_an_unknown_model_is_refused_listing_the_known_ids(api: Api) -> None:
    error = refused(api, {"model": "minimax/video-01", "prompt": "x"})
    assert error["name"] == "InvalidRequest"
    assert error["message"].startswith("model: ")
    assert "'minimax/video-01'" in error["message"]
    assert "minimax/hailuo-02" in error["message"]
    assert "preview" in error["message"]


def test_a_missing_model_is_refused(api: Api) -> None:
    assert refused(api, {"prompt": "x"})["message"] == "model: Field required"


# --- prompt ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (None, "prompt: Field required"),
        ("", "prompt: String should have at least 1 character"),
        ("a" * 2001, "prompt: String should have at most 2000 characters"),
        ("   ", "prompt: must not be blank"),
        ("\n\t ", "prompt: must not be blank"),
        (42, "prompt: Input should be a valid string"),
    ],
    ids=["missing", "empty", "2001-chars", "blank", "whitespace", "number"],
)
def test_a_bad_prompt_is_refused(api: Api, prompt: object, expected: str) -> None:
    body: dict[str, Any] = {"model": MODEL}
    if prompt is not None:
        body["prompt"] = prompt
    assert refused(api, body)["message"].startswith(expected)


def test_a_prompt_of_2000_characters_is_accepted(api: Api) -> None:
    assert accepted(api, {"model": MODEL, "prompt": "a" * 2000}).prompt == "a" * 2000


@pytest.mark.parametrize(
    "prompt",
    ["A boat [Pan left, Fly up]", "A boat [Pan left, Pan right, Zoom in, Shake]"],
    ids=["unknown-movement", "four-movements"],
)
def test_a_bad_camera_bracket_is_refused_naming_prompt(api: Api, prompt: str) -> None:
    message = refused(api, {"model": MODEL, "prompt": prompt})["message"]
    assert message.startswith("prompt: ")
    assert prompt[prompt.index("[") :] in message


def test_a_bracket_naming_no_movement_is_plain_text(api: Api) -> None:
    assert accepted(api, {"model": MODEL, "prompt": "A sign reading [Fly up]"}).prompt


def test_three_movements_in_a_bracket_are_accepted(api: Api) -> None:
    prompt = "A lighthouse at dusk [Truck left, Pan right, Zoom in]"
    assert accepted(api, {"model": MODEL, "prompt": prompt}).prompt == prompt


# --- duration, resolution, prompt_optimizer ----------------------------------------------


@pytest.mark.parametrize(
    ("duration", "got"),
    [(7, "7"), ("6", "'6'"), (6.5, "6.5"), (True, "True"), (None, "None")],
    ids=["seven", "string", "fraction", "bool", "null"],
)
def test_a_duration_other_than_6_or_10_is_refused(api: Api, duration: object, got: str) -> None:
    message = refused(api, {"model": MODEL, "prompt": "x", "duration": duration})["message"]
    assert message == f"duration: Input should be 6 or 10 (got {got})"


def test_a_duration_of_6_point_0_is_refused(api: Api) -> None:
    """Strict pydantic matches a literal by value (``6.0 == 6``); types are strict here."""
    message = refused(api, {"model": MODEL, "prompt": "x", "duration": 6.0})["message"]
    assert message == "duration: Input should be 6 or 10 (got 6.0)"


def test_10_seconds_at_1080p_is_refused_naming_duration_and_768p(api: Api) -> None:
    body = {"model": MODEL, "prompt": "x", "duration": 10, "resolution": "1080P"}
    message = refused(api, body)["message"]
    assert message.startswith("duration: ")
    assert "768P" in message
    assert "1080P" in message


@pytest.mark.parametrize(("duration", "resolution"), [(10, "768P"), (6, "1080P"), (6, "768P")])
def test_offered_lengths_are_accepted(api: Api, duration: int, resolution: str) -> None:
    body = {"model": MODEL, "prompt": "x", "duration": duration, "resolution": resolution}
    request = accepted(api, body)
    assert (request.duration_s, request.size) == (duration, Resolution(resolution))


@pytest.mark.parametrize("resolution", ["720P", "768p", "1080", 768])
def test_an_unknown_resolution_is_refused(api: Api, resolution: object) -> None:
    message = refused(api, {"model": MODEL, "prompt": "x", "resolution": resolution})["message"]
    assert message.startswith("resolution: Input should be '768P' or '1080P'")
    assert repr(resolution) in message


@pytest.mark.parametrize(
    ("route", "field"), [(LEGACY, "prompt_optimizer"), (UNIFIED, "enhance_prompt")]
)
@pytest.mark.parametrize("flag", ["yes", "true", 1])
def test_a_non_boolean_optimizer_flag_is_refused(
    api: Api, route: str, field: str, flag: object
) -> None:
    message = refused(api, {"model": MODEL, "prompt": "x", field: flag}, route)["message"]
    assert message.startswith(f"{field}: Input should be a valid boolean")


@pytest.mark.parametrize(
    ("route", "field"), [(LEGACY, "prompt_optimizer"), (UNIFIED, "enhance_prompt")]
)
def test_the_optimizer_flag_is_read_in_each_dialect(api: Api, route: str, field: str) -> None:
    request = accepted(api, {"model": MODEL, "prompt": "x", field: False}, route)
    assert request.prompt_optimizer is False


# --- images ------------------------------------------------------------------------------

IMAGE_FIELDS = [
    (LEGACY, "first_frame_image", "first_frame"),
    (LEGACY, "last_image_url", "last_frame"),
    (UNIFIED, "image_url", "first_frame"),
    (UNIFIED, "last_image_url", "last_frame"),
]
IMAGE_IDS = ["legacy-first", "legacy-last", "unified-first", "unified-last"]
image_fields = pytest.mark.parametrize(("route", "field", "stored"), IMAGE_FIELDS, ids=IMAGE_IDS)


@image_fields
@pytest.mark.parametrize("form", ["bare", "data-uri"])
def test_a_base64_png_is_accepted_and_kept(
    api: Api, route: str, field: str, stored: str, form: str
) -> None:
    data = png_base64()
    value = data if form == "bare" else f"data:image/png;base64,{data}"
    request = accepted(api, {"model": MODEL, "prompt": "x", field: value}, route)
    ref = getattr(request, stored)
    assert ref.field == field
    kept = api.settings.data_dir / ref.key
    assert kept.read_bytes() == base64.b64decode(data)


@image_fields
def test_an_image_url_is_accepted_for_the_worker_to_fetch(
    api: Api, route: str, field: str, stored: str
) -> None:
    url = "https://images.example/mona-lisa.jpeg"
    request = accepted(api, {"model": MODEL, "prompt": "x", field: url}, route)
    assert getattr(request, stored) == ImageRef(field=field, url=url)


@image_fields
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not base64 at all!", "not an http(s) URL, a data:image/...;base64 URI or base64"),
        ("ftp://x/y.png", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("data:text/plain,hello", "data URI must be of the form data:image/<type>;base64,"),
        ("https:///no-host.png", "URL has no host"),
        (png_base64(fmt="GIF"), "image is not a JPG/JPEG or PNG file"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode(), "image could not be decoded"),
        (png_base64(300, 500), "image is 300x500; its shorter side must be greater than 300 px"),
        (png_base64(1000, 300), "image is 1000x300; its shorter side must be greater than 300"),
        (png_base64(1000, 400), "image is 1000x400 (width/height 2.500); the ratio must be"),
        (png_base64(320, 800), "image is 320x800 (width/height 0.400); the ratio must be"),
    ],
    ids=[
        "invalid-base64",
        "ftp-url",
        "file-url",
        "data-uri-not-base64",
        "url-without-host",
        "gif",
        "truncated-png",
        "300x500",
        "1000x300",
        "ratio-5:2",
        "ratio-2:5",
    ],
)
def test_a_bad_image_is_refused_naming_its_field(
    api: Api, route: str, field: str, stored: str, value: str, expected: str
) -> None:
    message = refused(api, {"model": MODEL, "prompt": "x", field: value}, route)["message"]
    assert message.startswith(f"{field}: {expected}")


def test_ratios_just_inside_the_bounds_are_accepted(api: Api) -> None:
    body = {"model": MODEL, "prompt": "x"}
    assert accepted(api, {**body, "first_frame_image": png_base64(999, 400)}).first_frame
    assert accepted(api, {**body, "last_image_url": png_base64(321, 802)}).last_frame


def test_a_too_long_image_url_is_refused(api: Api) -> None:
    url = "https://images.example/" + "a" * 4100
    message = refused(api, {"model": MODEL, "prompt": "x", "first_frame_image": url})["message"]
    assert message.startswith("first_frame_image: URL is 4123 characters; the limit is 4096")


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
@pytest.mark.parametrize("name", ["first_frame_image", "image_url"])
def test_either_routes_name_for_the_first_frame_is_read_on_both(
    api: Api, route: str, name: str
) -> None:
    picture = png_base64()
    request = accepted(api, {"model": MODEL, "prompt": "x", name: picture}, route)
    assert request.first_frame is not None
    bad = refused(api, {"model": MODEL, "prompt": "x", name: "not base64!"}, route)
    assert bad["message"].startswith(f"{name}: ")  # named as the client sent it


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
@pytest.mark.parametrize("name", ["prompt_optimizer", "enhance_prompt"])
def test_either_routes_name_for_the_optimizer_is_read_on_both(
    api: Api, route: str, name: str
) -> None:
    assert (
        accepted(api, {"model": MODEL, "prompt": "x", name: False}, route).prompt_optimizer is False
    )


@pytest.mark.parametrize(
    ("route", "own", "other"),
    [(LEGACY, "first_frame_image", "image_url"), (UNIFIED, "image_url", "first_frame_image")],
)
def test_one_field_under_both_names_must_have_one_value(
    api: Api, route: str, own: str, other: str
) -> None:
    picture = png_base64()
    same = {"model": MODEL, "prompt": "x", own: picture, other: picture}
    assert accepted(api, same, route).first_frame is not None
    differ = {"model": MODEL, "prompt": "x", own: picture, other: png_base64(600, 480)}
    message = refused(api, differ, route)["message"]
    assert message == f"{own}: given twice with different values, as {own} and as {other}; send one"
    flags = {"model": MODEL, "prompt": "x", "prompt_optimizer": True, "enhance_prompt": False}
    assert "given twice with different values" in refused(api, flags, route)["message"]


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
@pytest.mark.parametrize("name", ["durationn", "last_frame_image", "Prompt"])
def test_an_unknown_field_is_refused_naming_it(api: Api, route: str, name: str) -> None:
    message = refused(api, {"model": MODEL, "prompt": "x", name: 6}, route)["message"]
    assert message.startswith(f"{name}: unknown field; this route takes model, prompt, ")
    assert "last_image_url" in message


# --- the body itself ---------------------------------------------------------------------


def test_a_body_that_is_not_json_is_refused(api: Api) -> None:
    response = api.client.post(
        LEGACY, content=b"model=minimax", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "name": "InvalidRequest",
        "message": "body: not valid JSON (Expecting value)",
    }


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null"])
def test_a_json_body_that_is_not_an_object_is_refused(api: Api, body: bytes) -> None:
    response = api.client.post(LEGACY, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("body: ")


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[Api]:
    """The API alone with a body limit of ``SMALL_LIMIT`` bytes."""
    with running_api(service_settings(tmp_path, max_body_bytes=SMALL_LIMIT)) as live:
        yield live


def chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    """``data`` as a generator: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def body_of(prompt_chars: int) -> bytes:
    return json.dumps({"model": MODEL, "prompt": "a" * prompt_chars}).encode()


def test_a_body_over_the_limit_is_refused_with_413(small_api: Api) -> None:
    response = small_api.client.post(
        LEGACY, content=body_of(5000), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "name": "PayloadTooLarge",
        "message": f"request body is larger than {SMALL_LIMIT} bytes",
    }


def test_a_chunked_body_over_the_limit_is_refused_with_413(small_api: Api) -> None:
    response = small_api.client.post(
        LEGACY, content=chunks(body_of(5000)), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413, response.text
    assert response.json()["error"]["name"] == "PayloadTooLarge"
    assert small_api.store.counts()[Status.QUEUED] == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_under_the_limit_is_accepted(small_api: Api, chunked: bool) -> None:
    data = body_of(1500)
    response = small_api.client.post(
        LEGACY,
        content=chunks(data) if chunked else data,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


# --- fetch -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
def test_an_empty_generation_id_is_refused(api: Api, route: str) -> None:
    response = api.client.get(route, params={"generation_id": ""})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("generation_id: ")


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
def test_a_fetch_of_an_unknown_id_is_404(api: Api, route: str) -> None:
    response = api.client.get(route, params={"generation_id": "0123abcd"})
    assert response.status_code == 404
    assert response.json() == {"error": {"name": "NotFound", "message": "no generation '0123abcd'"}}


def test_a_fetch_with_an_overlong_id_is_refused(api: Api) -> None:
    response = api.client.get(LEGACY, params={"generation_id": "x" * 65})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("generation_id: ")
