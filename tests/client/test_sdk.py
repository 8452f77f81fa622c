"""``Client`` against a real service: the API on loopback and one worker process, shared
by the module's tests (each test makes its own generations)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reelforge.client import ApiError, Client, Generation, GenerationFailed
from reelforge.client.images import ImageInput
from reelforge.contract import DEFAULT_MODEL, Status
from reelforge.errors import InvalidRequest
from tests.client.inputs import GIF, LANDSCAPE, PORTRAIT, QUICK, SQUARE, TOO_WIDE
from tests.client.loopback import ScriptedServer
from tests.client.recording import Recording
from tests.pictures import encoded
from tests.service import TEST_KEY, Api, running_api, service_settings
from tests.videos import mae, probe

WAIT = 30.0
"""Seconds any generation here may take (a preview takes about one)."""


@pytest.fixture
def client(live: Api) -> Iterator[Client]:
    with Client(f"{live.base_url}/v2", TEST_KEY, policy=QUICK) as sdk:
        yield sdk


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def test_a_text_only_generation_is_downloaded_as_a_1366x768_video(
    client: Client, tmp_path: Path
) -> None:
    seen: list[Generation] = []
    done = client.generate(
        "A lighthouse at dusk", output=tmp_path / "out.mp4", timeout=WAIT, on_progress=seen.append
    )
    assert done.status is Status.COMPLETED
    assert done.video_url is not None
    clip = probe(tmp_path / "out.mp4")
    assert (clip.codec, clip.width, clip.height, len(clip.frames)) == ("h264", 1366, 768, 150)
    assert list(tmp_path.iterdir()) == [tmp_path / "out.mp4"]  # no .part left behind
    progress = [g.progress or 0 for g in seen]
    assert progress == sorted(progress)
    assert progress[0] < 100
    assert (seen[-1].status, seen[-1].progress) == (Status.COMPLETED, 100)
    assert all(g.status in (Status.QUEUED, Status.GENERATING) for g in seen[:-1])


@pytest.mark.parametrize(
    ("form", "picture", "size"),
    [
        ("path", LANDSCAPE, (1152, 768)),
        ("bytes", PORTRAIT, (768, 1152)),
        ("PIL", SQUARE, (768, 768)),
    ],
    ids=["path", "bytes", "PIL"],
)
def test_a_local_first_frame_gives_a_video_of_its_aspect(
    client: Client, tmp_path: Path, form: str, picture: Image.Image, size: tuple[int, int]
) -> None:
    image: ImageInput = picture
    if form == "path":
        image = tmp_path / "photo.png"
        picture.save(image)
    elif form == "bytes":
        image = encoded(picture, "JPEG", quality=95)
    client.generate(
        "A slow push [Push in]", output=tmp_path / "out.mp4", timeout=WAIT, first_frame_image=image
    )
    clip = probe(tmp_path / "out.mp4")
    assert ((clip.width, clip.height), len(clip.frames)) == (size, 150)
    assert mae(clip.frames[0], resized(picture, size)) < 6


def test_a_url_first_frame_is_fetched_by_the_service(
    client: Client, site: ScriptedServer, tmp_path: Path
) -> None:
    url = f"{site.base_url}/portrait.png"
    done = client.generate(
        "A portrait", output=tmp_path / "out.mp4", timeout=WAIT, first_frame_image=url
    )
    assert done.status is Status.COMPLETED
    clip = probe(tmp_path / "out.mp4")
    assert ((clip.width, clip.height), len(clip.frames)) == ((768, 1152), 150)
    assert mae(clip.frames[0], resized(PORTRAIT, (768, 1152))) < 6
    assert len(site.requests("GET", "/portrait.png")) >= 1


def test_the_video_ends_on_the_last_frame(client: Client, tmp_path: Path) -> None:
    last = LANDSCAPE.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    client.generate(
        "A morph",
        output=tmp_path / "out.mp4",
        timeout=WAIT,
        first_frame_image=LANDSCAPE,
        last_frame_image=encoded(last),
    )
    clip = probe(tmp_path / "out.mp4")
    assert ((clip.width, clip.height), len(clip.frames)) == ((1152, 768), 150)
    assert mae(clip.frames[0], resized(LANDSCAPE, (1152, 768))) < 6
    assert mae(clip.frames[-1], resized(last, (1152, 768))) < 6


def test_create_get_wait_and_download_one_by_one(client: Client, tmp_path: Path) -> None:
    created = client.create("A lighthouse at dusk", model="preview")
    assert created.status is Status.QUEUED
    got = client.get(created.id)
    assert isinstance(got, Generation)
    assert got.id == created.id
    assert got.status in (Status.QUEUED, Status.GENERATING, Status.COMPLETED)
    assert got.raw["model"] == "preview"
    done = client.wait(created.id, timeout=WAIT)
    assert (done.id, done.status, done.done, done.progress) == (
        created.id,
        Status.COMPLETED,
        True,
        100,
    )
    assert isinstance(done.credits_used, float)
    assert (done.error_name, done.error_message) == (None, None)
    assert client.download(done, tmp_path / "clip.mp4") == tmp_path / "clip.mp4"
    assert len(probe(tmp_path / "clip.mp4").frames) == 150


@pytest.mark.parametrize(
    ("argument", "image", "field"),
    [
        ("first_frame_image", TOO_WIDE, "first_frame_image"),
        ("first_frame_image", GIF, "first_frame_image"),
        ("first_frame_image", b"not an image", "first_frame_image"),
        ("last_frame_image", TOO_WIDE, "last_image_url"),
    ],
    ids=["too-wide", "gif", "not-an-image", "last-too-wide"],
)
def test_a_local_image_that_breaks_a_rule_is_refused_before_any_request(
    live: Api, argument: str, image: ImageInput, field: str
) -> None:
    first, last = (image, None) if argument == "first_frame_image" else (LANDSCAPE, image)
    jobs = sum(live.store.counts().values())
    transport = Recording()
    with (
        Client(f"{live.base_url}/v2", TEST_KEY, policy=QUICK, transport=transport) as client,
        pytest.raises(InvalidRequest) as refused,
    ):
        client.generate("x", timeout=WAIT, first_frame_image=first, last_frame_image=last)
    assert refused.value.field == field
    assert refused.value.message.startswith(f"{field}: ")
    assert transport.requests == []
    assert sum(live.store.counts().values()) == jobs


def test_a_missing_file_is_refused_with_its_path(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"first_frame_image: cannot read .*nowhere\.png"):
        client.create("x", first_frame_image=tmp_path / "nowhere.png")


def test_a_refused_create_raises_api_error_with_the_server_message(
    client: Client, live: Api
) -> None:
    jobs = sum(live.store.counts().values())
    body = {
        "model": DEFAULT_MODEL,
        "prompt": "x",
        "duration": 7,
        "resolution": "768P",
        "prompt_optimizer": True,
    }
    answer = live.create(body)
    assert answer.status_code == 400
    with pytest.raises(ApiError) as refused:
        client.create("x", duration=7)
    assert (refused.value.status, refused.value.name) == (400, "InvalidRequest")
    assert refused.value.message == answer.json()["error"]["message"]
    assert "duration" in refused.value.message
    assert sum(live.store.counts().values()) == jobs


def test_a_generation_that_ends_in_error_raises_generation_failed(
    client: Client, site: ScriptedServer, tmp_path: Path
) -> None:
    page = f"{site.base_url}/page.png"
    created = client.create("x", first_frame_image=page)
    with pytest.raises(GenerationFailed) as failed:
        client.wait(created.id, timeout=WAIT)
    assert failed.value.generation_id == created.id
    assert failed.value.name == "InvalidImage"
    assert failed.value.message == "first_frame_image: image is not a JPG/JPEG or PNG file"
    with pytest.raises(GenerationFailed, match="InvalidImage"):
        client.generate("x", output=tmp_path / "out.mp4", timeout=WAIT, first_frame_image=page)
    assert not (tmp_path / "out.mp4").exists()


def test_cancel_ends_a_queued_generation(tmp_path: Path) -> None:
    with (
        running_api(service_settings(tmp_path)) as api,
        Client(f"{api.base_url}/v2", TEST_KEY) as client,
    ):
        created = client.create("x")
        cancelled = client.cancel(created.id)
        assert cancelled.status is Status.ERROR
        assert cancelled.error_name == "Cancelled"
