"""The MiniMax-H3 engine on a tiny random-weight H3 repository, loaded from a temp dir the
way a deployment loads the real one (modular ``from_pretrained`` + ``load_components``),
on the CPU, offline, at a 64x64 canvas with 3 steps (2 transformer evaluations)."""

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers")

import av
import huggingface_hub.constants
import numpy as np
import torch
from PIL import Image

from reelforge.engines.base import Keyframes
from reelforge.engines.minimax_h3 import (
    KeyframeProcessor,
    MiniMaxH3Engine,
    default_canvas,
    generation_frames,
)
from reelforge.engines.registry import ENGINES, ModelSpec
from reelforge.errors import Cancelled, InvalidRequest, OutOfMemory
from reelforge.media.encoder import encode_mp4
from reelforge.request import Dimensions, JobRequest
from tests.conftest import FAST
from tests.pictures import textured
from tests.tiny_h3 import WEIGHT_NORM_WARNING, build_tiny_h3
from tests.tiny_models import record_calls

pytestmark = pytest.mark.filterwarnings(WEIGHT_NORM_WARNING)

PORTRAIT = (600, 900)
"""A keyframe's (width, height); at 768P its video is 768x1152."""


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub access: a component missing from the directory fails at once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_h3(tmp_path_factory.mktemp("hub") / "MiniMax-H3")


def tiny_spec(weights: Path, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {
        "id": "h3-tiny",
        "engine": "minimax_h3",
        "weights": str(weights),
        "dtype": "float32",
        "device": "cpu",
        "steps": 3,
        "canvas": (64, 64),
    }
    return ModelSpec(**(values | fields))


@pytest.fixture(scope="module")
def engine(repo: Path) -> MiniMaxH3Engine:
    loaded = MiniMaxH3Engine(tiny_spec(repo))
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def native(repo: Path) -> MiniMaxH3Engine:
    loaded = MiniMaxH3Engine(tiny_spec(repo, keep_native_size=True))
    loaded.load()
    return loaded


@pytest.fixture
def decodes(engine: MiniMaxH3Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the VAEs (``vae``, ``audio_vae``) each time one decodes."""
    calls: list[str] = []
    for name in ("vae", "audio_vae"):
        model = getattr(engine.pipeline, name)
        monkeypatch.setattr(model, "decode", counted(model.decode, name, calls))
    return calls


def counted(function: Callable[..., Any], name: str, calls: list[str]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return function(*args, **kwargs)

    return wrapper


def ask(
    prompt: str = "A lighthouse at dusk",
    first_frame: Image.Image | None = None,
    last_frame: Image.Image | None = None,
    **fields: Any,
) -> tuple[JobRequest, Keyframes]:
    """A 6 s 768P request (unless ``fields`` say otherwise) and its decoded keyframes."""
    request = JobRequest(prompt=prompt, **({"duration_s": 6} | fields))
    return request, Keyframes(first_frame, last_frame)


def nothing(done: int, total: int) -> None:
    """An ``on_step`` that ignores progress."""


def test_loads_the_fl2va_components_and_never_transformer_ref(engine: MiniMaxH3Engine) -> None:
    pipeline = engine.pipeline
    loaded = {
        name: type(getattr(pipeline, name)).__name__
        for name in ("transformer", "vae", "audio_vae", "scheduler", "audio_scheduler")
    }
    assert loaded == {
        "transformer": "MiniMaxH3Transformer3DModel",
        "vae": "AutoencoderKLMiniMaxH3",
        "audio_vae": "AutoencoderKLMiniMaxH3Audio",
        "scheduler": "MiniMaxH3Scheduler",
        "audio_scheduler": "MiniMaxH3Scheduler",
    }
    weights = next(pipeline.transformer.parameters())
    assert (weights.device.type, weights.dtype) == ("cpu", torch.float32)
    assert pipeline.transformer_ref is None
    if importlib.util.find_spec("torchvision") is None:
        assert isinstance(pipeline.processor, KeyframeProcessor)


def test_text_only_is_1366x768_144_frames_at_24_fps_with_stereo_32_khz_audio(
    engine: MiniMaxH3Engine, decodes: list[str]
) -> None:
    steps: list[tuple[int, int]] = []
    video = engine.generate(*ask(), lambda done, total: steps.append((done, total)))
    assert (video.width, video.height, video.fps, video.frame_count) == (1366, 768, 24, 144)
    assert next(video.frames).shape == (768, 1366, 3)  # the count: see the MP4 test
    assert video.audio is not None
    assert video.audio.samples.shape == (2, 192_000)
    assert video.audio.samples.dtype == np.float32
    assert np.isfinite(video.audio.samples).all()
    assert video.audio.sample_rate == 32_000
    assert steps == [(1, 2), (2, 2)]  # 3 steps are 2 transformer evaluations
    assert sorted(decodes) == ["audio_vae", "vae"]
    assert video.meta == {
        "engine": "minimax_h3",
        "model": "h3-tiny",
        "native_width": 64,
        "native_height": 64,
        "native_frames": 158,  # 144 snapped up to 17n+5
        "fps": 24,
        "steps": 3,
        "sample_rate": 32_000,
        "seed": video.meta["seed"],
    }


@pytest.mark.parametrize("keyframes", [("first_frame",), ("first_frame", "last_frame")])
def test_keyframes_give_the_video_their_aspect(
    engine: MiniMaxH3Engine, keyframes: tuple[str, ...]
) -> None:
    images: dict[str, Any] = {
        name: textured(*PORTRAIT, seed=index) for index, name in enumerate(keyframes)
    }
    video = engine.generate(*ask(**images), nothing)
    assert (video.width, video.height, video.frame_count) == (768, 1152, 144)
    assert next(video.frames).shape == (1152, 768, 3)
    assert video.audio is not None
    assert (video.audio.samples.shape, video.audio.sample_rate) == ((2, 192_000), 32_000)


def test_native_size_encodes_to_an_mp4_with_stereo_aac_as_long_as_the_picture(
    native: MiniMaxH3Engine, tmp_path: Path
) -> None:
    video = native.generate(*ask(first_frame=textured(*PORTRAIT)), nothing)
    assert (video.width, video.height) == (64, 64)
    path = tmp_path / "clip.mp4"
    encode_mp4(video, path, FAST)
    with av.open(str(path)) as container:
        picture, sound = container.streams.video[0], container.streams.audio[0]
        assert (picture.width, picture.height) == (64, 64)
        assert picture.average_rate == 24
        assert (sound.codec_context.name, sound.channels, sound.sample_rate) == ("aac", 2, 32_000)
        seconds = [float((s.duration or 0) * Fraction(s.time_base or 0)) for s in (picture, sound)]
        assert sum(1 for _ in container.decode(video=0)) == 144
    assert seconds[0] == pytest.approx(6.0)
    assert abs(seconds[1] - seconds[0]) <= 1 / 24


def test_a_cancel_from_on_step_stops_at_once_without_decoding(
    engine: MiniMaxH3Engine, decodes: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    steps: list[int] = []

    def on_step(done: int, total: int) -> None:
        steps.append(done)
        raise Cancelled

    with pytest.raises(Cancelled), caplog.at_level(logging.ERROR):
        engine.generate(*ask(), on_step)
    assert steps == [1]
    assert decodes == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # a cancel is no error


def test_out_of_memory_in_a_step_names_the_registry_options(
    engine: MiniMaxH3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine.pipeline.transformer, "forward", exhausted)
    with pytest.raises(OutOfMemory) as raised:
        engine.generate(*ask(), nothing)
    assert all(word in raised.value.message for word in ("canvas", "cpu_offload", "vae_tiling"))


@pytest.mark.parametrize("component", ["audio_vae", "processor"])
def test_a_missing_component_refuses_to_start_naming_it(
    repo: Path, tmp_path: Path, component: str
) -> None:
    copy = Path(shutil.copytree(repo, tmp_path / "MiniMax-H3"))
    shutil.rmtree(copy / component)
    with pytest.raises(RuntimeError, match=rf"component\(s\) {component} did not load"):
        MiniMaxH3Engine(tiny_spec(copy)).load()


@pytest.mark.parametrize(
    ("fields", "fault"),
    [
        ({"canvas": (60, 64)}, "multiples of 32"),
        ({"canvas": (32, 160)}, "1:4 to 4:1"),
        ({"steps": 1}, "steps"),
        ({"options": {"fps": 30}}, r"options\.fps"),
        ({"options": {"cpu_offload": "model"}}, "needs an accelerator"),
        ({"options": {"cpu_offload": "sequential"}}, "cpu_offload"),
        ({"options": {"vae_tiling": "yes"}}, "vae_tiling"),
    ],
)
def test_a_bad_spec_is_refused(tmp_path: Path, fields: dict[str, Any], fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        MiniMaxH3Engine(tiny_spec(tmp_path, **fields))


def test_request_steps_override_the_registrys(
    engine: MiniMaxH3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(engine, monkeypatch)
    steps: list[tuple[int, int]] = []
    request = ask(duration_s=5, options={"num_inference_steps": 4})
    engine.generate(*request, lambda done, total: steps.append((done, total)))
    assert calls[0]["num_inference_steps"] == 4
    assert steps == [(1, 3), (2, 3), (3, 3)]  # 4 steps are 3 transformer evaluations


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"fps": 25}, "fps"),
        ({"options": {"num_inference_steps": 1}}, "options.num_inference_steps"),
        ({"options": {"guidance_scale": 5.0}}, "options.guidance_scale"),
        ({"options": {"negative_prompt": "fog"}}, "options.negative_prompt"),
        ({"duration_s": 15}, "duration"),
    ],
)
def test_what_the_model_cannot_take_is_refused_before_generating(
    engine: MiniMaxH3Engine, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        engine.generate(*ask(**fields), nothing)
    assert raised.value.field == field


def test_explicit_dimensions_crop_the_keyframe_to_the_canvas_and_cover_the_output(
    engine: MiniMaxH3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_calls(engine, monkeypatch)
    portrait = textured(*PORTRAIT)
    request = ask(first_frame=portrait, size=Dimensions(640, 320), duration_s=5)
    video = engine.generate(*request, nothing)
    assert (video.width, video.height, video.frame_count) == (640, 320, 120)
    assert next(video.frames).shape == (320, 640, 3)
    given = calls[0]["image"]
    assert given.size == (600, 600)  # the square canvas's aspect, at the image's resolution
    assert np.array_equal(np.asarray(given), np.asarray(portrait.crop((0, 150, 600, 750))))


def test_the_listed_durations_are_the_ones_the_model_makes() -> None:
    shortest, longest = ENGINES["minimax_h3"].seconds
    for seconds in range(shortest, longest + 1):
        generation_frames(seconds)
    for seconds in (shortest - 1, longest + 1):
        with pytest.raises(InvalidRequest):
            generation_frames(seconds)


@pytest.mark.parametrize(("seconds", "frames"), [(5, 124), (6, 158), (10, 243)])
def test_frames_cover_the_duration_in_17n_plus_5(seconds: int, frames: int) -> None:
    assert generation_frames(seconds) == frames
    assert frames >= seconds * 24
    assert frames % 17 == 5


@pytest.mark.parametrize("seconds", [4, 15])
def test_a_clip_outside_5_to_15_seconds_is_refused(seconds: int) -> None:
    with pytest.raises(InvalidRequest, match="duration"):
        generation_frames(seconds)


@pytest.mark.parametrize(
    ("aspect", "canvas"),
    [
        ((16, 9), (768, 1344)),
        ((9, 16), (1344, 768)),
        ((1, 1), (768, 768)),
        ((4, 3), (768, 1024)),
        ((21, 9), (672, 1536)),
        ((1920, 1080), (768, 1344)),
    ],
)
def test_default_canvas_is_768_short_edge_within_768x1344_area(
    aspect: tuple[int, int], canvas: tuple[int, int]
) -> None:
    assert default_canvas(*aspect) == canvas
