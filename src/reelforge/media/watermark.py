"""The visible "AI-generated" mark a request may ask for (MiniMax's ``aigc_watermark``): white
text on a translucent dark plate in the bottom-right corner, the same on every frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from reelforge.video import Frame, Video

LABEL: Final = "AI-generated"
PLATE_OPACITY: Final = 0.45
"""How much the plate darkens the picture under it, 0..1."""


@dataclass(frozen=True)
class Mark:
    """The mark for one frame size: where its plate starts (pixels from the top left) and,
    over the plate, the text's coverage (0..1, antialiased)."""

    top: int
    left: int
    text: npt.NDArray[np.float32]
    """Shape (plate height, plate width, 1)."""


def watermarked(video: Video) -> Video:
    """``video`` with the mark on each frame, stamped as the encoder reads the frames (a lazy
    ``frames`` stays lazy). The text is 1/36 of the shorter side tall (21 px at 768P)."""
    mark = make_mark(video.width, video.height)
    return replace(video, frames=_stamped(video.frames, mark))


def _stamped(frames: Iterator[Frame], mark: Mark) -> Iterator[Frame]:
    for frame in frames:
        yield stamp(frame, mark)


def make_mark(width: int, height: int) -> Mark:
    """The mark for ``width`` x ``height`` frames, with a margin of half the text's size."""
    size = max(10, min(width, height) // 36)
    font = ImageFont.load_default(size=size)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), LABEL, font=font)
    left, top, right, bottom = (round(edge) for edge in box)  # whole pixels; the pad covers
    pad = size // 3
    plate = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(plate).text((pad - left, pad - top), LABEL, font=font, fill=255)
    text = (np.asarray(plate, np.float32) / 255).astype(np.float32)[..., None]
    margin = size // 2
    row, col = max(0, height - margin - plate.height), max(0, width - margin - plate.width)
    return Mark(row, col, text[: height - row, : width - col])  # cropped on tiny frames


def stamp(frame: Frame, mark: Mark) -> Frame:
    """A copy of ``frame`` with ``mark`` on it: the plate darkens, the text is white."""
    out = frame.copy()
    rows, cols = mark.text.shape[:2]
    region = out[mark.top : mark.top + rows, mark.left : mark.left + cols].astype(np.float32)
    region *= 1 - PLATE_OPACITY
    region += (255 - region) * mark.text
    out[mark.top : mark.top + rows, mark.left : mark.left + cols] = region.round().astype(np.uint8)
    return out
