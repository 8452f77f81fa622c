"""The LTX engine on a tiny random-weight checkpoint, loaded from disk like a real one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the ltx engine needs: pip install 'reelforge[diffusers]'")

import torch
from PIL import Image, ImageOps

from reelforge.engines.base import Keyframes
from reelforge.engines.ltx import DEFAULTS, LTXEngine
from reelforge.engines.registry import ModelSpec
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

MODEL = "ltx-test"
PORTRAIT = textured(600, 900, seed=1)
"""A 2:3 keyframe: the contract makes it 768x1152 at 768P."""
LANDSCAPE = textured(900, 600, seed=2)


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    with offline_hub():
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.save_ltx(tmp_path_factory.mktemp("ltx") / "ltx")


def loaded(weights: Path, **fields: Any) -> LTXEngine:
    values: dict[str, Any] = {"canvas": (64, 96), "steps": 2, **fields}
    spec = ModelSpec(
        id=MODEL, engine="ltx", weights=str(weights), dtype="float32", device="cpu", **values
    )
    engine = LTXEngine(spec)
    engine.load()
    return engine


def job(
    first_frame: Image.Image | None = None, last_frame: Image.Image | None = None, **fields: Any
) -> tuple[JobRequest, Keyframes]:
    """A request (6 s at 768P unless ``fields`` say otherwise) and its decoded keyframes."""
    values: dict[str, Any] = {"prompt": "a red kite over the dunes", "duration_s": 6}
    return JobRequest(**{**values, **fields}), Keyframes(first_frame, last_frame)


def test_text_is_1366x768_144_frames_at_24_fps_in_the_mp4(checkpoint: Path, tmp_path: Path) -> None:
    steps = StepLog()
    video = loaded(checkpoint, canvas=(32, 64)).generate(*job(), steps)
    assert (video.width, video.height, video.fps, video.frame_count) == (1366, 768, 24, 144)
    assert steps.calls == [(1, 2), (2, 2)]
    assert video.meta == {
        "engine": "ltx",
        "model": MODEL,
        "native_width": 64,
        "native_height": 32,
        "native_frames": 145,
        "fps": 24,
        "steps": 2,
        "seed": video.meta["seed"],
    }
    encode_mp4(video, tmp_path / "ltx.mp4", FAST)
    clip = probe(tmp_path / "ltx.mp4")
    assert (clip.width, clip.height, clip.fps, len(clip.frames)) == (1366, 768, 24, 144)


def test_a_first_frame_conditions_frame_zero_and_sets_the_aspect(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoint)
    encoded = record_encodes(engine.pipeline.vae, monkeypatch)
    steps = StepLog()
    video = engine.generate(*job(first_frame=PORTRAIT, duration_s=1), steps)
    assert (video.width, video.height, video.fps, video.frame_count) == (768, 1152, 24, 24)
    # The canvas's area (64 x 96) at the keyframe's 2:3, in multiples of 32.
    assert (video.meta["native_width"], video.meta["native_height"]) == (64, 96)
    assert [tuple(pixels.shape[2:]) for pixels in encoded] == [(1, 96, 64)]
    assert steps.calls == [(1, 2), (2, 2)]
    assert next(video.frames).shape == (1152, 768, 3)


@pytest.mark.parametrize("first", [PORTRAIT, None], ids=["first-and-last", "last-only"])
def test_a_last_frame_conditions_the_last_generated_frame_which_ends_the_video(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, first: Any
) -> None:
    engine = loaded(checkpoint, keep_native_size=True)
    encoded = record_encodes(engine.pipeline.vae, monkeypatch)
    decoded = record_decodes(engine.pipeline.vae, monkeypatch)
    video = engine.generate(*job(first_frame=first, last_frame=LANDSCAPE, duration_s=1), StepLog())
    frames = list(video.frames)
    size = (64, 96) if first is not None else (96, 64)  # the first keyframe's aspect
    assert ((video.width, video.height), video.fps, len(frames)) == (size, 24, 24)
    assert len(encoded) == (1 if first is None else 2)
    # 25 generated frames become 24: one dropped inside, both ends kept.
    assert np.abs(frames[0].astype(int) - decoded_frame(decoded[0], 0)).max() <= 1
    assert np.abs(frames[-1].astype(int) - decoded_frame(decoded[0], 24)).max() <= 1


def test_a_checkpoint_published_as_ltx_pipeline_loads_too(checkpoint: Path, tmp_path: Path) -> None:
    published = shutil.copytree(checkpoint, tmp_path / "published")
    index = json.loads((published / "model_index.json").read_text())
    (published / "model_index.json").write_text(json.dumps({**index, "_class_name": "LTXPipeline"}))
    video = loaded(published, keep_native_size=True).generate(*job(duration_s=1), StepLog())
    assert len(list(video.frames)) == 24


def test_raising_from_on_step_cancels_before_the_vae_decode(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoint, steps=3)
    decoded = record_decodes(engine.pipeline.vae, monkeypatch)
    steps = StepLog()

    def cancel_at_one(done: int, total: int) -> None:
        steps(done, total)
        raise Cancelled

    with pytest.raises(Cancelled):
        engine.generate(*job(first_frame=PORTRAIT), cancel_at_one)
    assert steps.calls == [(1, 3)]
    assert decoded == []
    engine.generate(*job(duration_s=1), StepLog())  # and the engine still works
    assert len(decoded) == 1


def test_out_of_memory_in_a_step_names_the_registry_options(checkpoint: Path) -> None:
    def exhausted(done: int, total: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine = loaded(checkpoint)
    with pytest.raises(OutOfMemory, match=r"canvas.*cpu_offload.*vae_tiling") as raised:
        engine.generate(*job(), exhausted)
    assert MODEL in raised.value.message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"options": {"cpu_offload": "model"}}, "needs an accelerator"),
        ({"options": {"cpu_offload": "sequential"}}, "needs an accelerator"),
        ({"options": {"attention_backend": "warp"}}, "options.attention_backend"),
        ({"canvas": (48, 64)}, "canvas 48x64 .* multiples of 32"),
    ],
)
def test_load_refuses_what_the_checkpoint_or_machine_cannot_do(
    checkpoint: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"model '{MODEL}'.*{message}"):
        loaded(checkpoint, **fields)


@pytest.mark.parametrize(
    "options",
    [
        {"cache": "first_block"},
        {"cache": "taylorseer"},
        {"cache": "pab"},
        {"vae_tiling": True, "attention_backend": "native", "guidance_scale": 1.0},
        {"fps": 25, "negative_prompt": ""},
    ],
)
def test_registry_options_apply_and_the_clip_still_comes_out(
    checkpoint: Path, options: dict[str, Any]
) -> None:
    engine = loaded(checkpoint, steps=5, options=options, keep_native_size=True)
    steps = StepLog()
    video = engine.generate(*job(duration_s=1, first_frame=PORTRAIT), steps)
    assert len(list(video.frames)) == video.frame_count == engine.fps
    assert steps.calls == [(step, 5) for step in range(1, 6)]


def test_compile_wraps_each_transformer_block_in_torch_compile(checkpoint: Path) -> None:
    transformer = loaded(checkpoint, options={"compile": True}).pipeline.transformer
    assert len(transformer.transformer_blocks) == 2
    # nn.Module.compile: the block's call goes through torch.compile (traced at the first
    # call, not run here: inductor needs minutes on this CPU); the rest stays eager.
    assert all(block._compiled_call_impl is not None for block in transformer.transformer_blocks)
    assert transformer._compiled_call_impl is None
    plain = loaded(checkpoint).pipeline.transformer
    assert all(block._compiled_call_impl is None for block in plain.transformer_blocks)


def test_request_options_override_the_registrys_and_ltxs_defaults(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoint, steps=None, options={"guidance_scale": 1.0})
    calls = record_calls(engine, monkeypatch)
    asked = {"num_inference_steps": 3, "guidance_scale": 4.5, "negative_prompt": "rain"}
    steps = StepLog()
    engine.generate(*job(duration_s=1, options=asked, size=Dimensions(320, 256)), steps)
    assert {name: calls[0][name] for name in asked} == asked
    assert len(calls[0]["timesteps"]) == 3
    assert steps.calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(Cancelled):
        engine.generate(*job(duration_s=1), cancel)
    assert (calls[1]["num_inference_steps"], calls[1]["guidance_scale"]) == (40, 1.0)
    assert calls[1]["negative_prompt"] == DEFAULTS.negative_prompt


def cancel(done: int, total: int) -> None:
    raise Cancelled


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"fps": 25}, "fps"),
        ({"options": {"negative_prompt": 3}}, "options.negative_prompt"),
        ({"options": {"strength": 0.5}}, "options.strength"),
    ],
)
def test_a_frame_rate_or_option_the_engine_cannot_take_is_refused(
    checkpoint: Path, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        loaded(checkpoint).generate(*job(**fields), StepLog())
    assert raised.value.field == field


def test_explicit_dimensions_set_the_canvas_aspect_and_keyframes_are_cover_cropped(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded(checkpoint, canvas=(32, 64))
    calls = record_calls(engine, monkeypatch)
    video = engine.generate(
        *job(first_frame=PORTRAIT, size=Dimensions(512, 256), duration_s=1), StepLog()
    )
    assert (video.width, video.height) == (512, 256)
    assert next(video.frames).shape == (256, 512, 3)
    # A 2:1 canvas at the configured area, in multiples of 32; the 2:3 keyframe cropped onto it.
    assert (calls[0]["width"], calls[0]["height"]) == (64, 32)
    given = np.asarray(calls[0]["conditions"][0].image, dtype=float)
    covered = np.asarray(ImageOps.fit(PORTRAIT, (64, 32), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(given - covered).mean() < 1


def test_load_is_idempotent(checkpoint: Path) -> None:
    engine = loaded(checkpoint)
    pipeline = engine.pipeline
    engine.load()
    assert engine.pipeline is pipeline


def test_the_seed_or_the_prompt_decides_the_pixels(checkpoint: Path) -> None:
    engine = loaded(checkpoint, keep_native_size=True)

    def frames(**fields: Any) -> Frame:
        return np.stack(list(engine.generate(*job(duration_s=1, **fields), StepLog()).frames))

    assert np.array_equal(frames(seed=7), frames(seed=7))
    assert not np.array_equal(frames(seed=7), frames(seed=8))
    assert np.array_equal(frames(), frames())  # no seed: derived from the prompt
