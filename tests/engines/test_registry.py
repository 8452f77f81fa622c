from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reelforge.engines.options import LTXOptions, MiniMaxH3Options, PreviewOptions, WanOptions
from reelforge.engines.registry import (
    ENGINES,
    PREVIEW,
    Capabilities,
    ModelSpec,
    capabilities,
    default_registry,
    load_registry,
)
from reelforge.request import JobRequest


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_the_default_serves_hailuo_and_preview_with_the_preview_engine() -> None:
    served = default_registry()
    assert sorted(served) == ["minimax/hailuo-02", "preview"]
    assert {spec.engine for spec in served.values()} == {"preview"}
    facts = capabilities(served["minimax/hailuo-02"])
    assert facts == Capabilities(
        text=True,
        first_frame=True,
        last_frame=True,
        last_frame_required=False,
        audio=False,
        fps=25,
        fps_choices=(8, 60),
        min_seconds=1,
        max_seconds=20,
        min_short_side=256,
        max_long_side=2700,
        request_options=(),
    )
    assert isinstance(served["preview"].options, PreviewOptions)


def test_a_registry_file_names_models_and_the_hailuo_alias(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        hailuo = "h3"
        [models.h3]
        engine = "minimax_h3"
        weights = "/models/MiniMax-H3"
        steps = 30
        canvas = [768, 1344]
        options = { vae_tiling = true }
        [models."wan2.1-t2v"]
        engine = "wan"
        weights = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
        first_frame = false
        last_frame = false
        [models."wan2.1-flf2v"]
        engine = "wan"
        weights = "/models/Wan2.1-FLF2V-14B-720P"
        text = false
        last_frame_required = true
        """,
    )
    served = load_registry(path)
    assert sorted(served) == ["h3", "minimax/hailuo-02", "wan2.1-flf2v", "wan2.1-t2v"]
    assert served["minimax/hailuo-02"] is served["h3"]
    assert served["h3"].canvas == (768, 1344)
    assert served["h3"].options == MiniMaxH3Options(vae_tiling=True)
    h3 = capabilities(served["h3"])
    assert (h3.fps, h3.fps_choices, h3.audio) == (24, (24, 24), True)
    assert (h3.min_seconds, h3.max_seconds, h3.request_options) == (5, 14, ("num_inference_steps",))
    wan = capabilities(served["wan2.1-t2v"])
    assert (wan.fps, wan.text, wan.first_frame, wan.last_frame) == (16, True, False, False)
    assert wan.request_options == ("negative_prompt", "num_inference_steps", "guidance_scale")
    assert served["wan2.1-t2v"].options == WanOptions()
    flf2v = capabilities(served["wan2.1-flf2v"])
    assert (flf2v.text, flf2v.first_frame, flf2v.last_frame) == (False, True, True)
    assert flf2v.last_frame_required


def test_options_fps_is_the_listed_frame_rate_and_the_only_choice(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [models.ti2v]
        engine = "wan"
        weights = "/models/Wan2.2-TI2V-5B"
        last_frame = false
        options = { fps = 24, cache = "pab", guidance_scale = 4, negative_prompt = "" }
        [models.ltx]
        engine = "ltx"
        weights = "/models/LTX-Video"
        options = { cpu_offload = "group", vae_tiling = true, compile = true }
        """,
    )
    served = load_registry(path)
    ti2v = served["ti2v"].options_as(WanOptions)
    assert (ti2v.fps, ti2v.cache, ti2v.guidance_scale, ti2v.negative_prompt) == (24, "pab", 4, "")
    assert (capabilities(served["ti2v"]).fps, capabilities(served["ti2v"]).fps_choices) == (
        24,
        (24, 24),
    )
    ltx = served["ltx"].options_as(LTXOptions)
    assert (ltx.cpu_offload, ltx.vae_tiling, ltx.compile, ltx.fps) == ("group", True, True, None)
    assert capabilities(served["ltx"]).fps == 24
    with pytest.raises(TypeError, match="WanOptions"):
        served["ti2v"].options_as(LTXOptions)


def test_capabilities_are_json_as_get_v2_models_lists_them() -> None:
    listed = json.loads(json.dumps(asdict(capabilities(PREVIEW))))
    assert listed["fps_choices"] == [8, 60]
    assert listed["request_options"] == []
    assert "durations" not in listed
    assert "resolutions" not in listed


def test_every_engine_in_the_table_has_its_options_and_facts() -> None:
    assert sorted(ENGINES) == ["ltx", "minimax_h3", "preview", "upstream", "wan"]
    for kind in ENGINES.values():
        assert kind.fps > 0
        assert 1 <= kind.seconds[0] <= kind.seconds[1] <= 20


def test_a_spec_built_in_code_validates_its_options_dict() -> None:
    spec = ModelSpec(
        id="x",
        engine="wan",
        weights="/w",
        device="cpu",
        dtype="float32",
        options={"fps": 24, "vae_tiling": True},
    )
    assert spec.options == WanOptions(fps=24, vae_tiling=True)
    assert spec.options_as(WanOptions).fps == 24
    with pytest.raises(ValidationError, match=r"options\.fps"):
        ModelSpec(id="x", engine="wan", weights="/w", options={"fps": "fast"})
    with pytest.raises(ValidationError, match="frozen"):
        spec.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.a]\nengine = 'sora'", r"models.'a'.engine: engine 'sora' is not one of"),
        ("[models.a]\nengine = 'wan'", r"models.'a': engine 'wan' needs weights"),
        ("[models.a]\nengine = 'preview'\ncolour = 'red'", r"models.'a'.colour: unknown key"),
        ("[models.a]\nengine = 'preview'\nid = 'b'", r"models.'a'.id: unknown key"),
        (
            "[models.a]\nengine = 'preview'\ncanvas = [64]",
            r"'a'.canvas: must be \[height, width\] .*\[64\]",
        ),
        ("[models.a]\nengine = 'preview'\ncanvas = [64, 0]", r"models.'a'.canvas\[1\]: .*0"),
        ("[models.a]\nengine = 'preview'\ntext = 'no'", r"models.'a'.text: .*boolean.*'no'"),
        ("[models.a]\nengine = 'preview'\nsteps = 0", r"models.'a'.steps: .*greater than 0"),
        ("[models.a]\nengine = 'preview'\nsteps = true", r"models.'a'.steps: .*integer"),
        ("[models.a]\nengine = 'preview'\ndtype = 'int8'", r"models.'a'.dtype: .*'bfloat16'"),
        ("[models.a]\nengine = 'preview'\noptions = 3", r"models.'a'.options: must be a table"),
        ("[models.a]\nengine = 'preview'\noptions = {fps = 30}", r"'a'.options.fps: unknown key"),
        (
            "[models.a]\nengine = 'preview'\nlast_frame = false\nlast_frame_required = true",
            "last_frame_required = true needs last_frame = true",
        ),
        ("hailuo = 'b'\n[models.a]\nengine = 'preview'", "hailuo = 'b' is not a model here"),
        ("title = 'x'", r"no \[models.<id>\] tables"),
        ("[models.a\nengine = 'preview'", "models.toml"),
    ],
)
def test_a_bad_registry_is_refused_with_the_entry_named(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_registry(write(tmp_path, text))


WAN = "[models.wan]\nengine = 'wan'\nweights = '/w'\n"
LTX = "[models.ltx]\nengine = 'ltx'\nweights = '/w'\n"
H3 = "[models.h3]\nengine = 'minimax_h3'\nweights = '/w'\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (WAN + "options = { fps = 0 }", r"models.'wan'.options.fps: .*greater than 0 \(got 0\)"),
        (WAN + "options = { fps = 2.5 }", r"models.'wan'.options.fps: .*integer"),
        (WAN + "options = { turbo = true }", r"models.'wan'.options.turbo: unknown key"),
        (WAN + "options = { cache = 'faster' }", "options.cache: FasterCache fails on Wan"),
        (WAN + "options = { cache = 'magic' }", r"options.cache: .*'first_block'.*'magic'"),
        (WAN + "options = { cpu_offload = 'all' }", r"options.cpu_offload: .*'model'"),
        (WAN + "options = { compile = 1 }", r"options.compile: .*boolean"),
        (WAN + "options = { attention_backend = 3 }", r"options.attention_backend: .*string"),
        (LTX + "options = { vae_tiling = 'yes' }", r"models.'ltx'.options.vae_tiling: .*'yes'"),
        (LTX + "options = { guidance_scale = -1 }", r"options.guidance_scale: .*greater than or"),
        (LTX + "options = { guidance_scale = true }", r"options.guidance_scale: .*number"),
        (LTX + "options = { negative_prompt = 0 }", r"options.negative_prompt: .*string"),
        (H3 + "options = { fps = 30 }", r"models.'h3'.options.fps: unknown key"),
        (H3 + "options = { cpu_offload = 'sequential' }", r"models.'h3'.options.cpu_offload"),
        (H3 + "options = { guidance_scale = 1.0 }", r"options.guidance_scale: unknown key"),
        (H3 + "options = { vae_tiling = 'no' }", r"models.'h3'.options.vae_tiling"),
    ],
)
def test_each_engine_refuses_options_it_does_not_know_or_of_the_wrong_type(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        load_registry(write(tmp_path, text))
    assert str(tmp_path / "models.toml") in str(raised.value)


@pytest.mark.parametrize(
    ("engine", "options"),
    [
        ("wan", {"cpu_offload": "model", "attention_backend": "flash", "cache": "first_block"}),
        ("ltx", {"cache": "taylorseer", "fps": 30, "guidance_scale": 1.5}),
        ("minimax_h3", {"cpu_offload": "model", "vae_tiling": False}),
        ("minimax_h3", {"cpu_offload": False}),
    ],
)
def test_each_engines_options_validate_into_its_model(engine: str, options: dict[str, Any]) -> None:
    spec = ModelSpec(id="m", engine=engine, weights="/w", options=options)
    assert isinstance(spec.options, ENGINES[engine].options)
    assert spec.options.model_dump(exclude_unset=True) == options


def test_capabilities_say_why_a_length_rate_or_size_is_not_made() -> None:
    can = capabilities(PREVIEW)
    assert can.timing_refusal(JobRequest(prompt="x", duration_s=20, fps=60), "it") is None
    assert can.timing_refusal(JobRequest(prompt="x", duration_s=21), "model 'p'") == (
        "duration_s",
        "21 s is not a length model 'p' can make; it makes 1 to 20 s",
    )
    assert can.timing_refusal(JobRequest(prompt="x", fps=7), "it") == (
        "fps",
        "7 fps is not a rate it can make; it makes 8 to 60",
    )
    assert can.size_refusal(256, 2700) is None
    assert can.size_refusal(1281, 720) == "both sides must be even"
    assert can.size_refusal(320, 254) == "the shorter side must be at least 256 px"
    assert can.size_refusal(2702, 1520) == "the longer side must be at most 2700 px"
