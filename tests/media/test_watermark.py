"""The "AI-generated" mark: stamped in the bottom-right corner of every frame, nowhere else,
readable (white text on a darkened plate), and lazy like the frames it marks."""

from __future__ import annotations

import numpy as np

from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.media.watermark import make_mark, stamp, watermarked
from reelforge.request import JobRequest, Resolution
from reelforge.video import Video


def preview(size: Resolution = Resolution.P768) -> Video:
    request = JobRequest(prompt="A lighthouse at dusk", duration_s=1, size=size)
    return PreviewEngine().generate(request, Keyframes(None, None), lambda done, total: None)


def test_every_frame_is_marked_in_its_corner_only() -> None:
    plain, marked = preview(), watermarked(preview())
    mark = make_mark(marked.width, marked.height)
    rows, cols = mark.text.shape[:2]
    count = 0
    for before, after in zip(plain.frames, marked.frames, strict=True):
        changed = np.argwhere((before != after).any(axis=2))
        assert (changed.min(axis=0) >= [mark.top, mark.left]).all()
        assert (changed.max(axis=0) < [mark.top + rows, mark.left + cols]).all()
        corner = (slice(mark.top, mark.top + rows), slice(mark.left, mark.left + cols))
        text = mark.text[..., 0] > 0.9
        assert after[corner][text].min() >= 220  # the letters are white
        plate = mark.text[..., 0] == 0
        assert after[corner][plate].mean() < before[corner][plate].mean() * 0.6  # darkened
        count += 1
    assert count == plain.frame_count == 25
    assert (marked.width, marked.height) == (1366, 768)


def test_the_mark_scales_with_the_frame_and_fits_a_tiny_one() -> None:
    at_768, at_1080 = make_mark(1366, 768), make_mark(1920, 1080)
    assert at_768.text.shape[0] < at_1080.text.shape[0] < 60
    assert at_768.top + at_768.text.shape[0] < 768
    assert at_768.left + at_768.text.shape[1] < 1366
    tiny = np.zeros((40, 50, 3), np.uint8)
    assert stamp(tiny, make_mark(50, 40)).shape == (40, 50, 3)


def test_the_frames_stay_lazy() -> None:
    asked = 0

    def frames() -> object:
        nonlocal asked
        for _ in range(3):
            asked += 1
            yield np.zeros((768, 1366, 3), np.uint8)

    video = Video(width=1366, height=768, fps=25, frame_count=3, frames=frames())  # type: ignore[arg-type]
    marked = watermarked(video)
    assert asked == 0
    next(marked.frames)
    assert asked == 1
