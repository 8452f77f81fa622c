"""The Wan engine on tiny random-weight checkpoints, loaded from disk like real ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the wan engine needs: pip install 'reelforge[diffusers]'")

import torch
from PIL import Image, ImageOps

from reelforge.engines.base import Keyframes
from reelforge.engines.registry import ModelSpec
from reelforge.engines.wan import WanEngine
from reelforge.errors import Cancelled, InvalidRequest, OutOfMemory
from reelforge.media.encoder import encode_mp4
from reelforge.request import Dimensions, JobRequest
from reelforge.video import Frame
from tests import tiny_models
from tests.conftest import FAST
from tests.pictures import textured
from tests.tiny_models import (
    StepLog,
    decoded_frame,
    offline_hub,
    record_calls,
    record_decodes,
    record_encodes,
)
from tests.videos import probe

MODEL = "wan-test"
PORTRAIT = textured(600, 900, seed=1)
"""A 2:3 keyframe: the contract makes it 768x1152 at 768P."""


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    with offline_hub():
        yield


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan")
    return {
        "t2v": tiny_models.save_wan_t2v(root / "t2v"),
        "i2v": tiny_models.save_wan_i2v(root / "i2v"),
        "flf2v": tiny_models.save_wan_i2v(root / "flf2v", last_frame=True),
        "ti2v": tiny_models.save_wan_ti2v(root / "ti2v"),
    }


# What each checkpoint can be asked, as its registry entry must say.
PROMISES: dict[str, dict[str, Any]] = {
    "t2v": {"first_frame": False, "last_frame": False},
    "i2v": {"text": False, "first_frame": True, "last_frame": False},
    "flf2v": {"text": False, "first_frame": True, "last_frame": True, "last_frame_required": True},
    "ti2v": {"first_frame": True, "last_frame": False, "options": {"fps": 24}},
}


def spec(checkpoints: dict[str, Path], kind: str, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {"canvas": (32, 32), "steps": 2, **PROMISES[kind], **fields}
    return ModelSpec(
        id=MODEL,
        engine="wan",
        weights=str(checkpoints[kind]),
        dtype="float32",
        device="cpu",
        **values,
    )


def loaded(checkpoints: dict[str, Path], kind: str, **fields: Any) -> WanEngine:
    engine = WanEngine(spec(checkpoints, kind, **fields))
    engine.load()
    return engine


def job(
    first_frame: Image.Image | None = None, last_frame: Image.Image | None = None, **fields: Any
) -> tuple[JobRequest, Keyframes]:
    """A request (6 s at 768P unless ``fields`` say otherwise) and its decoded keyframes."""
    values: dict[str, Any] = {"prompt": "a red kite over the dunes", "duration_s": 6}
    return JobRequest(**{**values, **fields}), Keyframes(first_frame, last_frame)


def test_text_is_1366x768_96_frames_at_16_fps_in_the_mp4(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    steps = StepLog()
    video = loaded(checkpoints, "t2v").generate(*job(), steps)
    assert (video.width, video.height, video.fps, video.frame_count) == (1366, 768, 16, 96)
    assert steps.calls == [(1, 2), (2, 2)]
    assert video.meta == {
        "engine": "wan",
        "model": MODEL,
        "checkpoint": "T2V",
        "native_width": 32,
        "native_height": 32,
        "native_frames": 97,
        "fps": 16,
        "steps": 2,
        "seed": video.meta["seed"],
    }
    encode_mp4(video, tmp_path / "wan.mp4", FAST)
    clip = probe(tmp_path / "wan.mp4")
    assert (clip.width, clip.height, clip.fps, len(clip.frames)) == (1366, 768, 16, 96)


def test_a_first_frame_sets_the_aspect_of_canvas_and_video(checkpoints: dict[str, Path]) -> None:
    steps = StepLog()
    engine = loaded(checkpoints, "i2v", canvas=(32, 64))
    video = engine.generate(*job(first_frame=PORTRAIT, duration_s=1), steps)
    assert (video.width, video.height, video.frame_count) == (768, 1152, 16)
    # The canvas's area (32 x 64) at the keyframe's 2:3, in multiples of 16.
    assert (video.meta["native_width"], video.meta["native_height"]) == (32, 48)
    assert steps.calls == [(1, 2), (2, 2)]
    assert next(video.frames).shape == (1152, 768, 3)


def test_first_and_last_frame_the_video_ends_on_the_last_generated_frame(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoints, "flf2v", keep_native_size=True)
    decoded = record_decodes(engine.pipeline.vae, monkeypatch)
    last = textured(900, 600, seed=2)
    video = engine.generate(*job(first_frame=PORTRAIT, last_frame=last, duration_s=1), StepLog())
    frames = list(video.frames)
    assert (video.width, video.height, video.fps, len(frames)) == (32, 32, 16, 16)
    assert video.meta["native_frames"] == 17
    # 17 generated frames become 16: one dropped inside, both pinned ends kept.
    assert np.abs(frames[0].astype(int) - decoded_frame(decoded[0], 0)).max() <= 1
    assert np.abs(frames[-1].astype(int) - decoded_frame(decoded[0], 16)).max() <= 1


def test_ti2v_5b_runs_at_24_fps_on_multiples_of_32(checkpoints: dict[str, Path]) -> None:
    engine = loaded(checkpoints, "ti2v", keep_native_size=True)
    video = engine.generate(*job(duration_s=2), StepLog())
    assert (video.width, video.height, video.fps, video.frame_count) == (32, 32, 24, 48)
    assert (video.meta["checkpoint"], video.meta["native_frames"]) == ("TI2V-5B", 49)
    assert len(list(video.frames)) == 48


def test_ti2v_5b_starts_from_an_image_with_the_same_weights(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoints, "ti2v", canvas=(32, 64))
    encoded = record_encodes(engine.pipeline.vae, monkeypatch)
    steps = StepLog()
    video = engine.generate(*job(first_frame=PORTRAIT, duration_s=1), steps)
    assert (video.width, video.height, video.fps, video.frame_count) == (768, 1152, 24, 24)
    assert [tuple(pixels.shape[2:]) for pixels in encoded] == [(1, 64, 32)]  # the first frame
    assert steps.calls == [(1, 2), (2, 2)]


def test_raising_from_on_step_cancels_before_the_vae_decode(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoints, "t2v", steps=3)
    decoded = record_decodes(engine.pipeline.vae, monkeypatch)
    steps = StepLog()

    def cancel_at_one(done: int, total: int) -> None:
        steps(done, total)
        raise Cancelled

    with pytest.raises(Cancelled):
        engine.generate(*job(), cancel_at_one)
    assert steps.calls == [(1, 3)]
    assert decoded == []
    engine.generate(*job(duration_s=1), StepLog())  # and the engine still works
    assert len(decoded) == 1


def test_out_of_memory_in_a_step_names_the_registry_options(checkpoints: dict[str, Path]) -> None:
    def exhausted(done: int, total: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine = loaded(checkpoints, "t2v")
    with pytest.raises(OutOfMemory, match=r"canvas.*cpu_offload.*vae_tiling") as raised:
        engine.generate(*job(), exhausted)
    assert MODEL in raised.value.message


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        ("t2v", {"options": {"cpu_offload": "model"}}, "needs an accelerator"),
        ("t2v", {"options": {"attention_backend": "warp"}}, "options.attention_backend"),
        ("t2v", {"canvas": (40, 64)}, "canvas 40x64 .* multiples of 16"),
        ("ti2v", {"canvas": (48, 64)}, "canvas 48x64 .* multiples of 32"),
        ("t2v", {"first_frame": True}, "T2V checkpoint, which cannot start from an image"),
        ("i2v", {"last_frame": True}, "I2V checkpoint, which cannot end on an image"),
        ("ti2v", {"last_frame": True}, "TI2V-5B checkpoint, which cannot end on an image"),
        ("i2v", {"first_frame": False}, "needs a first frame: set first_frame = true"),
        (
            "flf2v",
            {"last_frame": False, "last_frame_required": False},
            "needs a first and a last frame: set both to true",
        ),
        (
            "i2v",
            {"text": True},
            "I2V checkpoint, which needs a first frame image: set text = false",
        ),
        ("ti2v", {"options": {}}, "makes 24 fps: set options.fps = 24"),
        ("flf2v", {"last_frame_required": False}, "set last_frame_required = true"),
    ],
)
def test_load_refuses_what_the_checkpoint_or_machine_cannot_do(
    checkpoints: dict[str, Path], kind: str, fields: dict[str, Any], message: str
) -> None:
    engine = WanEngine(spec(checkpoints, kind, **fields))
    with pytest.raises(ValueError, match=f"model '{MODEL}'.*{message}"):
        engine.load()
    assert engine.pipeline is None


@pytest.mark.parametrize(
    ("kind", "frames", "field"),
    [
        ("i2v", {}, "first_frame_image"),
        ("i2v", {"last_frame": PORTRAIT}, "first_frame_image"),
        ("flf2v", {"first_frame": PORTRAIT}, "last_image_url"),
    ],
)
def test_a_request_the_checkpoint_cannot_serve_is_refused(
    checkpoints: dict[str, Path], kind: str, frames: dict[str, Image.Image], field: str
) -> None:
    engine = loaded(checkpoints, kind, last_frame=kind == "flf2v")
    with pytest.raises(InvalidRequest, match=f"{MODEL}.*Wan") as raised:
        engine.generate(*job(**frames), StepLog())
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("t2v", {"cache": "first_block"}),
        ("t2v", {"cache": "taylorseer"}),
        ("t2v", {"cache": "pab"}),
        ("ti2v", {"cache": "pab", "fps": 24}),  # the image pipeline's timesteps reach the cache
        ("t2v", {"vae_tiling": True, "attention_backend": "native", "guidance_scale": 1.0}),
        ("t2v", {"fps": 8, "negative_prompt": ""}),
    ],
)
def test_registry_options_apply_and_the_clip_still_comes_out(
    checkpoints: dict[str, Path], kind: str, options: dict[str, Any]
) -> None:
    engine = loaded(checkpoints, kind, steps=5, options=options, keep_native_size=True)
    first = PORTRAIT if kind == "ti2v" else None
    steps = StepLog()
    video = engine.generate(*job(duration_s=1, first_frame=first), steps)
    assert len(list(video.frames)) == video.frame_count == engine.fps
    assert steps.calls == [(step, 5) for step in range(1, 6)]


def test_compile_wraps_each_transformer_block_in_torch_compile(
    checkpoints: dict[str, Path],
) -> None:
    transformer = loaded(checkpoints, "t2v", options={"compile": True}).pipeline.transformer
    assert len(transformer.blocks) == 2
    # nn.Module.compile: the block's call goes through torch.compile (traced at the first
    # call, not run here: inductor needs minutes on this CPU); the rest stays eager.
    assert all(block._compiled_call_impl is not None for block in transformer.blocks)
    assert transformer._compiled_call_impl is None
    plain = loaded(checkpoints, "t2v").pipeline.transformer
    assert all(block._compiled_call_impl is None for block in plain.blocks)


def test_request_options_override_the_registrys(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"guidance_scale": 2.0, "negative_prompt": "fog"}
    engine = loaded(checkpoints, "t2v", options=options, keep_native_size=True)
    calls = record_calls(engine, monkeypatch)
    asked = {"num_inference_steps": 3, "guidance_scale": 0.0, "negative_prompt": "rain"}
    steps = StepLog()
    engine.generate(*job(duration_s=1, options=asked), steps)
    engine.generate(*job(duration_s=1), StepLog())
    used = [{name: call[name] for name in asked} for call in calls]
    assert used == [
        asked,
        {"num_inference_steps": 2, "guidance_scale": 2.0, "negative_prompt": "fog"},
    ]
    assert steps.calls == [(1, 3), (2, 3), (3, 3)]


def test_without_registry_or_request_options_wans_defaults_apply(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoints, "t2v", steps=None, keep_native_size=True)
    calls = record_calls(engine, monkeypatch)
    with pytest.raises(Cancelled):
        engine.generate(*job(duration_s=1), cancel)
    assert calls[0]["num_inference_steps"] == 50
    assert calls[0]["guidance_scale"] == 5.0
    assert calls[0]["negative_prompt"].startswith("Bright tones, overexposed")


def cancel(done: int, total: int) -> None:
    raise Cancelled


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"fps": 24}, "fps"),
        ({"options": {"num_inference_steps": 0}}, "options.num_inference_steps"),
        ({"options": {"guidance_scale": "high"}}, "options.guidance_scale"),
        ({"options": {"seed_strength": 1}}, "options.seed_strength"),
    ],
)
def test_a_frame_rate_or_option_the_engine_cannot_take_is_refused(
    checkpoints: dict[str, Path], fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        loaded(checkpoints, "t2v").generate(*job(**fields), StepLog())
    assert raised.value.field == field


def test_explicit_dimensions_set_the_canvas_aspect_and_the_keyframe_is_cover_cropped(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoints, "i2v", canvas=(32, 64))
    calls = record_calls(engine, monkeypatch)
    video = engine.generate(
        *job(first_frame=PORTRAIT, size=Dimensions(640, 320), duration_s=1), StepLog()
    )
    assert (video.width, video.height) == (640, 320)
    assert next(video.frames).shape == (320, 640, 3)
    # A 2:1 canvas at the configured area; the 2:3 keyframe cropped, not squeezed, onto it.
    assert (calls[0]["width"], calls[0]["height"]) == (64, 32)
    given = np.asarray(calls[0]["image"], dtype=float)
    covered = np.asarray(ImageOps.fit(PORTRAIT, (64, 32), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(given - covered).mean() < 1


def test_load_is_idempotent(checkpoints: dict[str, Path]) -> None:
    engine = loaded(checkpoints, "t2v")
    pipeline = engine.pipeline
    engine.load()
    assert engine.pipeline is pipeline


def test_the_seed_or_the_prompt_decides_the_pixels(checkpoints: dict[str, Path]) -> None:
    engine = loaded(checkpoints, "t2v", keep_native_size=True)

    def frames(**fields: Any) -> Frame:
        return np.stack(list(engine.generate(*job(duration_s=1, **fields), StepLog()).frames))

    assert np.array_equal(frames(seed=7), frames(seed=7))
    assert not np.array_equal(frames(seed=7), frames(seed=8))
    assert np.array_equal(frames(), frames())  # no seed: derived from the prompt
