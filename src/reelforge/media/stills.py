"""Pictures of a finished video: a thumbnail (one representative frame) and a spritesheet (a
grid of evenly spaced frames), as JPEG.

Cost is bounded by the picture, not the clip: each frame is reached by seeking to the
keyframe before it and decoding forward from there (at most one group of pictures per
frame), never by decoding the whole video.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import Final

import av
from PIL import Image

SPRITE_COLUMNS: Final = 5
SPRITE_ROWS: Final = 2
SPRITE_TILE_WIDTH: Final = 256
"""Width of one spritesheet tile, in pixels (the height follows the video's aspect)."""
JPEG_QUALITY: Final = 85


def thumbnail(source: str) -> bytes:
    """A JPEG of the frame halfway through the video at ``source`` (a path or URL PyAV
    opens), at the video's own size."""
    (frame,) = frames_at(source, [0.5])
    return _jpeg(frame)


def spritesheet(source: str) -> bytes:
    """A JPEG grid, ``SPRITE_COLUMNS`` x ``SPRITE_ROWS``, of evenly spaced frames (the first
    at the start, each tile ``SPRITE_TILE_WIDTH`` px wide), left to right, top to bottom."""
    count = SPRITE_COLUMNS * SPRITE_ROWS
    frames = frames_at(source, [index / count for index in range(count)])
    width = SPRITE_TILE_WIDTH
    height = max(2, round(width * frames[0].height / frames[0].width))
    sheet = Image.new("RGB", (width * SPRITE_COLUMNS, height * SPRITE_ROWS))
    for index, frame in enumerate(frames):
        tile = frame.resize((width, height), Image.Resampling.BILINEAR)
        sheet.paste(tile, ((index % SPRITE_COLUMNS) * width, (index // SPRITE_COLUMNS) * height))
    return _jpeg(sheet)


def frames_at(source: str, fractions: Sequence[float]) -> list[Image.Image]:
    """The frames shown at each of ``fractions`` (0 ≤ f < 1) of the video's length, in the
    order asked. ``ValueError`` if the file has no video stream or no frame there."""
    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.time_base or Fraction(1, 1_000_000)
        duration = _duration(container, stream, base)
        return [_frame_at(container, stream, base, duration * f) for f in fractions]


def _duration(
    container: av.container.InputContainer, stream: av.VideoStream, base: Fraction
) -> float:
    """The video's length in seconds (the stream's, else the container's)."""
    if stream.duration is not None:
        return float(stream.duration * base)
    if container.duration is not None:
        return container.duration / av.time_base
    raise ValueError("the video does not state its length")


def _frame_at(
    container: av.container.InputContainer, stream: av.VideoStream, base: Fraction, at: float
) -> Image.Image:
    """The frame shown at ``at`` seconds: the last one starting at or before it."""
    start = float((stream.start_time or 0) * base)
    container.seek(int((start + at) / base), stream=stream, backward=True)
    shown = None
    for frame in container.decode(stream):
        if shown is not None and frame.time is not None and frame.time > start + at + 1e-6:
            break
        shown = frame
    if shown is None:
        raise ValueError(f"no frame at {at:.3f} s")
    return Image.fromarray(shown.to_ndarray(format="rgb24"))


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
