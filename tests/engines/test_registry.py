from __future__ import annotations

from pathlib import Path

import pytest

from reelforge.engines.registry import capabilities, default_registry, load_registry


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_the_default_serves_hailuo_and_preview_with_the_preview_engine() -> None:
    served = default_registry()
    assert sorted(served) == ["minimax/hailuo-02", "preview"]
    assert {spec.engine for spec in served.values()} == {"preview"}
    facts = capabilities(served["minimax/hailuo-02"])
    assert (facts.fps, facts.audio, facts.first_frame, facts.last_frame) == (25, False, True, True)


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
    assert served["h3"].options == {"vae_tiling": True}
    h3 = capabilities(served["h3"])
    assert (h3.fps, h3.audio) == (24, True)
    wan = capabilities(served["wan2.1-t2v"])
    assert (wan.fps, wan.text, wan.first_frame, wan.last_frame) == (16, True, False, False)
    flf2v = capabilities(served["wan2.1-flf2v"])
    assert (flf2v.text, flf2v.first_frame, flf2v.last_frame) == (False, True, True)
    assert flf2v.last_frame_required


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.a]\nengine = 'sora'", "engine 'sora' is not one of"),
        ("[models.a]\nengine = 'wan'", "needs weights"),
        ("[models.a]\nengine = 'preview'\ncolour = 'red'", r"unknown keys \['colour'\]"),
        ("[models.a]\nengine = 'preview'\ncanvas = [64]", r"canvas must be \[height, width\]"),
        ("[models.a]\nengine = 'preview'\ntext = 'no'", "text = 'no' must be true or false"),
        ("[models.a]\nengine = 'preview'\nsteps = 0", "steps = 0 must be a positive integer"),
        ("[models.a]\nengine = 'preview'\nsteps = true", "steps = True must be a positive"),
        ("[models.a]\nengine = 'preview'\noptions = 3", "options = 3 must be a table"),
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
