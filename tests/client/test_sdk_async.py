"""``AsyncClient`` against a real service: the key paths of ``test_sdk.py``, awaited."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reelforge.client import ApiError, AsyncClient, Generation, GenerationFailed
from reelforge.contract import Status
from reelforge.errors import InvalidRequest
from tests.client.inputs import GIF, LANDSCAPE, PORTRAIT, QUICK
from tests.client.loopback import ScriptedServer
from tests.client.recording import AsyncRecording
from tests.service import TEST_KEY, Api
from tests.videos import mae, probe

pytestmark = pytest.mark.anyio
WAIT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def connect(live: Api, transport: AsyncRecording | None = None) -> AsyncClient:
    return AsyncClient(f"{live.base_url}/v2", TEST_KEY, policy=QUICK, transport=transport)


async def test_generate_with_a_local_image_downloads_its_video(live: Api, tmp_path: Path) -> None:
    LANDSCAPE.save(tmp_path / "photo.png")
    seen: list[Generation] = []
    async with connect(live) as client:
        done = await client.generate(
            "A slow push [Push in]",
            output=tmp_path / "out.mp4",
            timeout=WAIT,
            on_progress=seen.append,
            first_frame_image=tmp_path / "photo.png",
        )
    assert done.status is Status.COMPLETED
    clip = probe(tmp_path / "out.mp4")
    assert ((clip.width, clip.height), len(clip.frames)) == ((1152, 768), 150)
    assert mae(clip.frames[0], LANDSCAPE.resize((1152, 768), Image.Resampling.LANCZOS)) < 6
    progress = [g.progress or 0 for g in seen]
    assert progress == sorted(progress)
    assert (seen[-1].status, seen[-1].progress) == (Status.COMPLETED, 100)


async def test_a_url_image_and_the_calls_one_by_one(
    live: Api, site: ScriptedServer, tmp_path: Path
) -> None:
    async with connect(live) as client:
        created = await client.create(
            "A portrait", first_frame_image=f"{site.base_url}/portrait.png"
        )
        got = await client.get(created.id)
        done = await client.wait(created.id, timeout=WAIT)
        path = await client.download(done, tmp_path / "clip.mp4")
    assert (got.id, done.id) == (created.id, created.id)
    assert isinstance(got.status, Status)
    assert done.status is Status.COMPLETED
    clip = probe(path)
    assert ((clip.width, clip.height), len(clip.frames)) == ((768, 1152), 150)
    assert mae(clip.frames[0], PORTRAIT.resize((768, 1152), Image.Resampling.LANCZOS)) < 6


async def test_a_local_image_that_breaks_a_rule_is_refused_before_any_request(live: Api) -> None:
    jobs = sum(live.store.counts().values())
    transport = AsyncRecording()
    async with connect(live, transport) as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.generate("x", timeout=WAIT, first_frame_image=GIF)
    assert refused.value.field == "first_frame_image"
    assert transport.requests == []
    assert sum(live.store.counts().values()) == jobs


async def test_a_refused_create_raises_api_error(live: Api) -> None:
    async with connect(live) as client:
        with pytest.raises(ApiError) as refused:
            await client.create("x", duration=7)
    assert (refused.value.status, refused.value.name) == (400, "InvalidRequest")
    assert refused.value.message.startswith("duration: ")


async def test_a_generation_that_ends_in_error_raises_generation_failed(
    live: Api, site: ScriptedServer
) -> None:
    async with connect(live) as client:
        created = await client.create("x", first_frame_image=f"{site.base_url}/page.png")
        with pytest.raises(GenerationFailed) as failed:
            await client.wait(created.id, timeout=WAIT)
    assert (failed.value.generation_id, failed.value.name) == (created.id, "InvalidImage")
    assert failed.value.message == "first_frame_image: image is not a JPG/JPEG or PNG file"
