"""Thumbnails and spritesheets pick the frames at the right times, whatever the keyframes."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from reelforge.media import stills

FPS = 10
FRAMES = 20


def level(index: int) -> int:
    """Frame ``index`` is one flat grey of this level (distinct by 10 per frame)."""
    return 20 + 10 * index


def clip(path: Path, gop: int) -> str:
    """A 2 s clip of flat grey frames, a keyframe every ``gop`` frames."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": str(gop), "preset": "ultrafast", "crf": "10"}
        for index in range(FRAMES):
            pixels = np.full((48, 64, 3), level(index), np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


@pytest.mark.parametrize("gop", [4, 250])
def test_the_thumbnail_is_the_middle_frame(tmp_path: Path, gop: int) -> None:
    thumb = Image.open(io.BytesIO(stills.thumbnail(clip(tmp_path / "c.mp4", gop))))
    assert (thumb.format, thumb.size) == ("JPEG", (64, 48))
    assert np.asarray(thumb).mean() == pytest.approx(level(FRAMES // 2), abs=4)


@pytest.mark.parametrize("gop", [4, 250])
def test_the_spritesheet_tiles_are_evenly_spaced_frames(tmp_path: Path, gop: int) -> None:
    sheet = np.asarray(Image.open(io.BytesIO(stills.spritesheet(clip(tmp_path / "c.mp4", gop)))))
    width, height = stills.SPRITE_TILE_WIDTH, round(stills.SPRITE_TILE_WIDTH * 48 / 64)
    assert sheet.shape == (2 * height, 5 * width, 3)
    for tile in range(10):
        row, column = divmod(tile, 5)
        inner = sheet[
            row * height + 8 : (row + 1) * height - 8, column * width + 8 : (column + 1) * width - 8
        ]
        assert inner.mean() == pytest.approx(level(tile * FRAMES // 10), abs=4), tile


def test_frames_come_back_in_the_order_asked(tmp_path: Path) -> None:
    frames = stills.frames_at(clip(tmp_path / "c.mp4", 4), [0.75, 0.0, 0.5, 0.999])
    means = [np.asarray(frame).mean() for frame in frames]
    assert means == pytest.approx([level(15), level(0), level(10), level(19)], abs=4)
