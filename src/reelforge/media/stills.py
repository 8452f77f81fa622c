"""Pictures of a finished video: a thumbnail (one representative frame) and a spritesheet (a
grid of evenly spaced frames), as JPEG.

Cost is bounded: at most one decoding pass over the video (a thumbnail starts at the keyframe
before its frame); the API keeps each result per process.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
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
    order asked. ``ValueError`` if the file has no video stream or no frame there.

    One seek, to the keyframe before the earliest of them, then one decoding pass forward to
    the latest: never more than one decode of the video (seeking again for each frame would
    decode a single-keyframe clip from its start every time)."""
    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.time_base or Fraction(1, 1_000_000)
        start = float((stream.start_time or 0) * base)
        times = [start + _duration(container, stream, base) * f for f in fractions]
        container.seek(int(min(times) / base), stream=stream, backward=True)
        found = _shown_at(container.decode(stream), sorted(set(times)))
    return [found[at] for at in times]


def _shown_at(frames: Iterator[av.VideoFrame], times: list[float]) -> dict[float, Image.Image]:
    """For each of ``times`` (seconds, ascending), the last of ``frames`` starting at or
    before it (the first frame for a time before every frame)."""
    found: dict[float, Image.Image] = {}
    shown = None
    pending = iter(times)
    at = next(pending, None)
    for frame in frames:
        while at is not None and shown is not None and (frame.time or 0.0) > at + 1e-6:
            found[at] = _picture(shown)
            at = next(pending, None)
        if at is None:
            break
        shown = frame
    while at is not None:  # past the last frame: the last one is shown
        if shown is None:
            raise ValueError(f"no frame at {at:.3f} s")
        found[at] = _picture(shown)
        at = next(pending, None)
    return found


def _duration(
    container: av.container.InputContainer, stream: av.VideoStream, base: Fraction
) -> float:
    """The video's length in seconds (the stream's, else the container's)."""
    if stream.duration is not None:
        return float(stream.duration * base)
    if container.duration is not None:
        return container.duration / av.time_base
    raise ValueError("the video does not state its length")


def _picture(frame: av.VideoFrame) -> Image.Image:
    return Image.fromarray(frame.to_ndarray(format="rgb24"))


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
