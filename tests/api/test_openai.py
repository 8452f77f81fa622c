"""The OpenAI dialect, driven by the official ``openai`` SDK (unmodified) against a real server
on loopback: ``service`` has a worker (the preview engine makes seconds-long clips in about a
second), ``api`` has none (jobs stay queued)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import openai
import pytest
from PIL import Image, ImageOps

from reelforge.api.auth import register
from reelforge.api.dialects.openai import poll_after_ms, render_error
from reelforge.contract import Status
from reelforge.jobs.model import Job
from reelforge.media import stills
from reelforge.request import JobRequest
from tests.pictures import encoded, textured
from tests.service import LEGACY, TEST_KEY, Api, running_api, running_workers, service_settings
from tests.videos import mae, probe

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API is scheduled:DeprecationWarning")
OTHER_KEY = "rf_another-tenant-key-0123456789abcdef"
# The SDK's types list OpenAI's own lengths and sizes; reelforge takes any its model makes.
ONE_S: Any = "1"
TWO_S: Any = "2"
SMALL: Any = "256x256"
WIDE: Any = "640x360"


def sdk(api: Api, key: str = TEST_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API and one worker, shared by the tests that need videos made."""
    settings = service_settings(tmp_path_factory.mktemp("openai"))
    with running_api(settings) as live, running_workers(settings):
        yield live


@pytest.fixture(scope="module")
def made(service: Api, tmp_path_factory: pytest.TempPathFactory) -> tuple[openai.types.Video, Path]:
    """One 4 s 1280x720 video, made through ``create_and_poll`` and downloaded."""
    client = sdk(service)
    done = client.videos.create_and_poll(
        model="minimax/hailuo-02", prompt="A lighthouse at dusk", seconds="4", size="1280x720"
    )
    path = tmp_path_factory.mktemp("download") / "video.mp4"
    client.videos.download_content(done.id).write_to_file(path)
    return done, path


# --- making videos ----------------------------------------------------------------------


def test_create_and_poll_makes_the_asked_video(made: tuple[openai.types.Video, Path]) -> None:
    done, path = made
    assert (done.status, done.progress, done.seconds, done.size) == (
        "completed",
        100,
        "4",
        "1280x720",
    )
    assert (done.model, done.prompt, done.error, done.object) == (
        "minimax/hailuo-02",
        "A lighthouse at dusk",
        None,
        "video",
    )
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    video = probe(path)
    assert (video.codec, video.width, video.height) == ("h264", 1280, 720)
    assert len(video.frames) / video.fps == 4.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None
        assert stream.time_base is not None
        assert float(stream.duration * stream.time_base) == pytest.approx(4.0, abs=1e-6)


def test_an_uploaded_reference_becomes_frame_0(service: Api, tmp_path: Path) -> None:
    image = textured(640, 360, seed=3)
    done = sdk(service).videos.create_and_poll(
        model="preview",
        prompt="still [Static shot]",
        seconds=ONE_S,
        size=WIDE,
        input_reference=("ref.png", encoded(image), "image/png"),
    )
    assert done.status == "completed", done.error
    sdk(service).videos.download_content(done.id).write_to_file(tmp_path / "v.mp4")
    assert mae(probe(tmp_path / "v.mp4").frames[0], image) < 4


def test_a_reference_of_another_aspect_is_cover_cropped(service: Api, tmp_path: Path) -> None:
    image = textured(400, 400, seed=5)
    done = sdk(service).videos.create_and_poll(
        model="preview",
        prompt="still [Static shot]",
        seconds=ONE_S,
        size=WIDE,
        input_reference=("ref.png", encoded(image), "image/png"),
    )
    assert done.status == "completed", done.error
    sdk(service).videos.download_content(done.id).write_to_file(tmp_path / "v.mp4")
    first = probe(tmp_path / "v.mp4").frames[0]
    assert first.shape == (360, 640, 3)
    assert mae(first, ImageOps.fit(image, (640, 360))) < 4  # cropped, not stretched
    assert mae(first, image.resize((640, 360))) > 4 * mae(first, ImageOps.fit(image, (640, 360)))


def test_thumbnail_and_spritesheet_are_jpegs_of_the_video(
    service: Api, made: tuple[openai.types.Video, Path]
) -> None:
    done, _ = made
    client = sdk(service)
    thumb = Image.open(
        io.BytesIO(client.videos.download_content(done.id, variant="thumbnail").content)
    )
    assert (thumb.format, thumb.size) == ("JPEG", (1280, 720))
    sheet_bytes = client.videos.download_content(done.id, variant="spritesheet").content
    sheet = Image.open(io.BytesIO(sheet_bytes))
    tile = stills.SPRITE_TILE_WIDTH
    assert (sheet.format, sheet.size) == ("JPEG", (5 * tile, 2 * round(tile * 720 / 1280)))


def test_the_video_is_served_with_range_support(
    service: Api, made: tuple[openai.types.Video, Path]
) -> None:
    done, path = made
    answer = service.client.get(f"/v1/videos/{done.id}/content", headers={"Range": "bytes=10-109"})
    assert answer.status_code == 206
    assert answer.content == path.read_bytes()[10:110]


@pytest.mark.parametrize("value", ["items=0-1", "bytes=100-50"])
def test_an_unknown_unit_or_invalid_range_is_the_whole_video(
    service: Api, made: tuple[openai.types.Video, Path], value: str
) -> None:
    """RFC 9110, 14.2: ignored, as on ``/files`` (not 400)."""
    done, path = made
    answer = service.client.get(f"/v1/videos/{done.id}/content", headers={"Range": value})
    assert answer.status_code == 200
    assert answer.content == path.read_bytes()


def test_an_unfinished_job_carries_the_poll_header(service: Api) -> None:
    created = sdk(service).videos.with_raw_response.create(
        model="preview", prompt="x", seconds=ONE_S, size=SMALL
    )
    assert 250 <= int(created.headers["openai-poll-after-ms"]) <= 10_000
    video = sdk(service).videos.poll(created.parse().id)
    done = sdk(service).videos.with_raw_response.retrieve(video.id)
    assert "openai-poll-after-ms" not in done.headers


# --- content before the end, failures ----------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API alone (no worker): jobs stay queued."""
    with running_api(service_settings(tmp_path)) as live:
        yield live


def test_content_of_a_queued_video_is_404_and_of_a_failed_one_422(api: Api) -> None:
    client = sdk(api)
    queued = client.videos.create(model="preview", prompt="x", seconds=ONE_S, size=SMALL)
    with pytest.raises(openai.NotFoundError, match="not ready"):
        client.videos.download_content(queued.id)
    api.client.delete(LEGACY, params={"generation_id": queued.id})  # cancelled: failed
    failed = client.videos.retrieve(queued.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("cancelled", "cancelled by the client")
    with pytest.raises(openai.UnprocessableEntityError):
        client.videos.download_content(queued.id)


# --- list, delete, ownership, dialects ----------------------------------------------------


def test_list_pages_through_25_videos_ten_at_a_time(api: Api) -> None:
    client = sdk(api)
    ids = [
        client.videos.create(model="preview", prompt=f"{n}", seconds=ONE_S).id for n in range(25)
    ]
    first = client.videos.list(limit=10)
    assert (len(first.data), first.has_more) == (10, True)
    assert [video.id for video in client.videos.list(limit=10)] == ids[::-1]
    oldest = client.videos.list(limit=3, order="asc")
    assert [video.id for video in oldest.data] == ids[:3]
    raw = api.client.get("/v1/videos", params={"limit": 10, "after": ids[5]}).json()
    assert raw["object"] == "list"
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[4], ids[0], False)


def test_delete_then_retrieve_is_not_found(api: Api) -> None:
    client = sdk(api)
    video = client.videos.create(model="preview", prompt="x", seconds=ONE_S)
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)
    assert api.store.claim(worker_id="w", lease_seconds=30) is None  # cancelled first


def test_a_key_sees_only_its_own(api: Api) -> None:
    mine = sdk(api).videos.create(model="preview", prompt="x", seconds=ONE_S)
    register(api.store, OTHER_KEY, name="other")
    theirs = sdk(api, OTHER_KEY)
    with pytest.raises(openai.NotFoundError):
        theirs.videos.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.videos.delete(mine.id)
    assert list(theirs.videos.list()) == []


def test_one_store_for_both_dialects(api: Api) -> None:
    hailuo_id = api.create({"model": "preview", "prompt": "from hailuo"}).json()["generation_id"]
    seen = sdk(api).videos.retrieve(hailuo_id)
    assert (seen.status, seen.seconds, seen.size, seen.prompt) == (
        "queued",
        "6",
        "1366x768",
        "from hailuo",
    )
    openai_id = sdk(api).videos.create(model="preview", prompt="from openai", seconds=TWO_S).id
    assert api.get(openai_id)["status"] == "queued"
    assert [video.id for video in sdk(api).videos.list()] == [openai_id, hailuo_id]


# --- refusals -----------------------------------------------------------------------------


def refusal(error: openai.APIStatusError) -> dict[str, Any]:
    body = error.body
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"size": "1280 by 720"}, "size"),
        ({"size": "1281x720"}, "size"),
        ({"seconds": "4.5"}, "seconds"),
        ({"seconds": "30"}, "seconds"),
        ({"model": "sora-2"}, "model"),
        ({"extra_body": {"input_reference[file_id]": "file_123"}}, "input_reference"),
        ({"extra_body": {"input_reference[image_url]": "ftp://x"}}, "input_reference"),
        ({"extra_body": {"quality": "hd"}}, "quality"),
        ({"extra_body": {"negative_prompt": "blur"}}, "negative_prompt"),
        ({"extra_body": {"seed": "x"}}, "seed"),
        ({"extra_body": {"enhance_prompt": "yes"}}, "enhance_prompt"),
    ],
)
def test_a_bad_field_is_refused_naming_it(api: Api, arguments: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(api).videos.create(**{"prompt": "x", "model": "preview", **arguments})
    error = refusal(caught.value)
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert param in error["message"]


def test_a_model_not_served_is_refused_listing_the_served(api: Api) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(api).videos.create(prompt="x", model="sora-2")
    assert "minimax/hailuo-02, preview" in refusal(caught.value)["message"]


def test_defaults_and_extensions_in_a_form(api: Api) -> None:
    client = sdk(api)
    made = client.videos.create(
        prompt="x", extra_body={"seed": "42", "enhance_prompt": "true", "fps": "8"}
    )
    assert (made.model, made.seconds, made.size) == ("minimax/hailuo-02", "4", "720x1280")
    job = api.store.get(made.id)
    assert job is not None
    assert (job.request.seed, job.request.prompt_optimizer, job.request.fps) == (42, True, 8)
    assert job.dialect == "openai"


def test_json_bodies_take_typed_values_and_reference_objects(api: Api) -> None:
    image = (
        "data:image/png;base64,"
        + __import__("base64").b64encode(encoded(textured(400, 320))).decode()
    )
    body = {
        "prompt": "x",
        "model": "preview",
        "seconds": 2,
        "size": "640x512",
        "input_reference": {"image_url": image},
        "seed": 7,
        "callback_url": "https://example.com/hook",
        "lora": "pixel-art",
    }
    answer = api.client.post("/v1/videos", json=body)
    assert answer.status_code == 200, answer.text
    job = api.store.get(answer.json()["id"])
    assert job is not None
    assert (job.request.duration_s, job.request.seed, job.callback_url, job.lora) == (
        2,
        7,
        "https://example.com/hook",
        "pixel-art",
    )
    assert job.request.first_frame is not None
    assert job.request.first_frame.key is not None
    refused = api.client.post("/v1/videos", json={**body, "seed": "7"})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "seed")
    refused = api.client.post(
        "/v1/videos", content=json.dumps([1]), headers={"Content-Type": "application/json"}
    )
    assert refused.json()["error"]["param"] == "body"


def test_a_bad_image_is_refused_naming_the_reference(api: Api) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(api).videos.create(prompt="x", input_reference=("a.png", b"not an image", "image/png"))
    assert refusal(caught.value)["param"] == "input_reference"
    assert refusal(caught.value)["code"] == "invalid_image"


def test_a_bad_list_limit_names_it(api: Api) -> None:
    answer = api.client.get("/v1/videos", params={"limit": 101})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "limit"


def test_a_missing_key_is_an_authentication_error(api: Api) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(api, "rf_wrong").videos.list()
    assert refusal(caught.value)["type"] == "authentication_error"


def test_models_in_openais_list_shape(api: Api) -> None:
    models = {model.id: model for model in sdk(api).models.list()}
    assert set(models) == {"minimax/hailuo-02", "preview"}
    preview = models["preview"].model_dump()
    assert (preview["object"], preview["owned_by"]) == ("model", "reelforge")
    assert (preview["default_seconds"], preview["default_size"], preview["min_seconds"]) == (
        4,
        "720x1280",
        1,
    )


def test_httpx_sees_json_errors_outside_the_sdk(api: Api) -> None:
    answer = httpx.get(
        f"{api.base_url}/v1/videos/x/content", headers={"Authorization": f"Bearer {TEST_KEY}"}
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_a_form_takes_the_last_reference_and_vllm_fields(api: Api) -> None:
    image = "data:image/png;base64," + base64.b64encode(encoded(textured(400, 320))).decode()
    fields = {"last_reference[image_url]": image, "width": "640", "height": "512", "fps": "10"}
    made = sdk(api).videos.create(prompt="x", model="preview", seconds=TWO_S, extra_body=fields)
    assert str(made.size) == "640x512"
    job = api.store.get(made.id)
    assert job is not None
    assert job.request.last_frame is not None
    assert (job.request.last_frame.field, job.request.fps) == ("last_reference", 10)
    assert job.request.prompt_optimizer is False  # OpenAI uses the prompt as given
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(api).videos.create(
            prompt="x", size="1280x720", extra_body={"width": "640", "height": "360"}
        )
    assert refusal(caught.value)["param"] == "size"


# --- in-process parts --------------------------------------------------------------------


def a_job(status: Status, *, progress: int = 0, started_at: float | None = None) -> Job:
    return Job(
        id="j",
        owner="k",
        model="preview",
        request=JobRequest(prompt="p"),
        status=status,
        progress=progress,
        attempts=1,
        max_attempts=3,
        lease_token=None,
        lease_expires_at=None,
        worker_id=None,
        error_name=None,
        error_message=None,
        video_key=None,
        credits_used=None,
        meta={},
        created_at=0.0,
        updated_at=0.0,
        started_at=started_at,
        finished_at=None,
    )


def test_the_poll_header_follows_the_expected_remaining_time() -> None:
    assert poll_after_ms(a_job(Status.QUEUED), now=100.0) == 1000
    running = a_job(Status.GENERATING, progress=40, started_at=96.0)  # 4 s for 40 %: 6 s left
    assert poll_after_ms(running, now=100.0) == 6000
    assert poll_after_ms(a_job(Status.GENERATING, progress=99, started_at=99.0), now=100.0) == 250
    assert poll_after_ms(a_job(Status.GENERATING, progress=1, started_at=0.0), now=100.0) == 10_000
    assert poll_after_ms(a_job(Status.GENERATING), now=100.0) == 1000
    assert poll_after_ms(a_job(Status.COMPLETED, progress=100), now=100.0) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_error_types_follow_the_status(status: int, kind: str) -> None:
    body = json.loads(bytes(render_error(status, "StorageFailed", "m", "size").body))
    assert body == {
        "error": {"message": "m", "type": kind, "param": "size", "code": "storage_failed"}
    }
