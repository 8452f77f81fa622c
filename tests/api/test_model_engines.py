"""The GPU engines end to end on the CPU: tiny random-weight checkpoints saved to a temp
directory, named in a registry file, loaded by a real worker process through the same code
path a deployment's weights take, and driven through the HTTP API."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

import av

from tests.pictures import encoded, textured
from tests.service import LEGACY, Api, running_api, running_workers, service_settings
from tests.tiny_h3 import build_tiny_h3
from tests.tiny_models import offline_hub, save_ltx, save_wan_i2v, save_wan_t2v
from tests.tiny_registry import TEXT_ONLY, tiny_entry

SLOW_STEPS = 2000
"""Denoising steps of the ``*-slow`` twins: far longer than a test waits."""
REGISTRY = "\n".join(
    [
        'hailuo = "h3-tiny"\n',
        tiny_entry("h3-tiny", "minimax_h3", "{h3}", 3),
        tiny_entry("wan-tiny", "wan", "{wan}", 2, *TEXT_ONLY),
        tiny_entry("wan-flf-tiny", "wan", "{flf}", 2, "text = false", "last_frame_required = true"),
        tiny_entry("ltx-tiny", "ltx", "{ltx}", 2),
        # The same weights made slow, to watch progress and to cancel.
        tiny_entry("h3-slow", "minimax_h3", "{h3}", SLOW_STEPS),
        tiny_entry("wan-slow", "wan", "{wan}", SLOW_STEPS, *TEXT_ONLY),
        tiny_entry("ltx-slow", "ltx", "{ltx}", SLOW_STEPS),
    ]
)


@pytest.fixture(scope="module")
def gpu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("models")
    with offline_hub():
        registry = root / "models.toml"
        registry.write_text(
            REGISTRY.format(
                h3=build_tiny_h3(root / "h3"),
                wan=save_wan_t2v(root / "wan"),
                flf=save_wan_i2v(root / "flf", last_frame=True),
                ltx=save_ltx(root / "ltx"),
            )
        )
        settings = service_settings(root / "data", models=registry, lease_seconds=30.0)
        with running_api(settings) as api, running_workers(settings):
            yield api


def probe_streams(path: Path) -> tuple[tuple[int, int, int, float], str | None]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        return (video.width, video.height, frames, float(video.average_rate or 0)), audio


def download(api: Api, generation: dict[str, object], path: Path) -> Path:
    video = generation["video"]
    assert isinstance(video, dict)
    path.write_bytes(api.client.get(video["url"]).content)
    return path


def test_hailuo_answered_by_minimax_h3_with_sound(gpu_service: Api, tmp_path: Path) -> None:
    created = gpu_service.create({"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"})
    done = gpu_service.wait(created.json()["generation_id"], timeout=240)
    assert done["status"] == "completed", done
    assert done["meta"]["video"]["fps"] == 24
    picture, sound = probe_streams(download(gpu_service, done, tmp_path / "h3.mp4"))
    assert picture == (1366, 768, 144, 24.0)
    assert sound == "aac"


def test_wan_text_to_video_keeps_its_16_fps(gpu_service: Api, tmp_path: Path) -> None:
    created = gpu_service.create({"model": "wan-tiny", "prompt": "A lighthouse at dusk"})
    done = gpu_service.wait(created.json()["generation_id"], timeout=240)
    assert done["status"] == "completed", done
    path = download(gpu_service, done, tmp_path / "wan.mp4")
    picture, sound = probe_streams(path)
    assert picture == (1366, 768, 96, 16.0)
    assert sound is None
    facts = done["meta"]["video"]  # the MP4's, beside the model's native 64x64
    assert (facts["width"], facts["height"], facts["bytes"]) == (1366, 768, path.stat().st_size)
    assert (facts["native_width"], facts["native_height"]) == (64, 64)


def test_a_first_frame_for_a_text_only_checkpoint_is_refused(gpu_service: Api) -> None:
    answer = gpu_service.create(
        {"model": "wan-tiny", "prompt": "x", "first_frame_image": "https://example.com/a.png"}
    )
    assert answer.status_code == 400
    assert "first_frame_image: model 'wan-tiny' cannot start from an image" in answer.text


def test_a_prompt_alone_for_a_keyframe_checkpoint_is_refused(gpu_service: Api) -> None:
    answer = gpu_service.create({"model": "wan-flf-tiny", "prompt": "A lighthouse at dusk"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "first_frame_image: model 'wan-flf-tiny' needs a first frame image; it cannot start "
        "from the prompt alone"
    )


def test_a_first_frame_alone_for_a_first_last_checkpoint_is_refused(gpu_service: Api) -> None:
    body = {"model": "wan-flf-tiny", "prompt": "x", "first_frame_image": data_uri(600, 900, 1)}
    answer = gpu_service.create(body)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "last_image_url: model 'wan-flf-tiny' needs a last frame image to go with the first"
    )


def test_models_lists_the_registry(gpu_service: Api) -> None:
    models = {m["id"]: m for m in gpu_service.client.get("/v2/models").json()["models"]}
    assert sorted(models) == [
        "h3-slow",
        "h3-tiny",
        "ltx-slow",
        "ltx-tiny",
        "minimax/hailuo-02",
        "wan-flf-tiny",
        "wan-slow",
        "wan-tiny",
    ]
    assert (models["minimax/hailuo-02"]["audio"], models["minimax/hailuo-02"]["fps"]) == (True, 24)
    assert (models["wan-tiny"]["first_frame"], models["wan-tiny"]["fps"]) == (False, 16)
    flf = models["wan-flf-tiny"]
    assert (flf["text"], flf["last_frame"], flf["last_frame_required"]) == (False, True, True)


def data_uri(width: int, height: int, seed: int) -> str:
    return (
        "data:image/png;base64,"
        + base64.b64encode(encoded(textured(width, height, seed=seed))).decode()
    )


def test_wan_first_and_last_frame_keeps_the_keyframes_aspect(
    gpu_service: Api, tmp_path: Path
) -> None:
    body = {
        "model": "wan-flf-tiny",
        "prompt": "A walk",
        "first_frame_image": data_uri(600, 900, 1),
        "last_image_url": data_uri(600, 900, 2),
    }
    done = gpu_service.wait(gpu_service.create(body).json()["generation_id"], timeout=240)
    assert done["status"] == "completed", done
    picture, _ = probe_streams(download(gpu_service, done, tmp_path / "flf.mp4"))
    assert picture == (768, 1152, 96, 16.0)


def test_ltx_with_a_first_frame_at_24_fps(gpu_service: Api, tmp_path: Path) -> None:
    body = {"model": "ltx-tiny", "prompt": "A walk", "first_frame_image": data_uri(900, 600, 3)}
    done = gpu_service.wait(gpu_service.create(body).json()["generation_id"], timeout=240)
    assert done["status"] == "completed", done
    picture, sound = probe_streams(download(gpu_service, done, tmp_path / "ltx.mp4"))
    assert picture == (1152, 768, 144, 24.0)
    assert sound is None


@pytest.mark.parametrize(
    ("slow", "quick"), [("wan-slow", "wan-tiny"), ("h3-slow", "h3-tiny"), ("ltx-slow", "ltx-tiny")]
)
def test_progress_rises_per_step_and_a_cancel_stops_the_model(
    gpu_service: Api, slow: str, quick: str
) -> None:
    """``SLOW_STEPS`` denoising steps (half a minute or more here): progress comes from the step
    callback (``callback_on_step_end``, H3's own block) through the heartbeat; a cancel ends
    the job at the next step, and the same warm worker then runs the next job."""
    generation_id = gpu_service.create({"model": slow, "prompt": "x"}).json()["generation_id"]
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(set(seen)) < 3:
        assert time.monotonic() < deadline, f"progress seen: {seen}"
        answer = gpu_service.get(generation_id)
        assert answer["status"] in ("queued", "generating"), answer
        if answer["progress"] > 0:
            seen.append(answer["progress"])
        time.sleep(0.05)
    assert seen == sorted(seen), seen
    assert max(seen) < 50, seen
    gpu_service.client.delete(LEGACY, params={"generation_id": generation_id})
    done = gpu_service.wait(generation_id, timeout=30)
    assert (done["status"], done["error"]["name"], done["video"]) == ("error", "Cancelled", None)
    assert max(seen) <= done["progress"] < 100
    after = gpu_service.create({"model": quick, "prompt": "A lighthouse at dusk"})
    assert gpu_service.wait(after.json()["generation_id"], timeout=240)["status"] == "completed"
