"""Output sizes: a resolution class sized by the keyframe's aspect, or explicit dimensions."""

from __future__ import annotations

from reelforge.request import Dimensions, OutputSize


def output_size(size: OutputSize, keyframe_size: tuple[int, int] | None) -> tuple[int, int]:
    """Width and height of the video, in pixels, both even.

    Explicit ``Dimensions``: as given. A resolution class, text-only: 1366x768 or 1920x1080;
    with a keyframe of ``(width, height)``: its aspect ratio with the shorter side equal to
    the resolution's (768 or 1080), the longer side rounded to the nearest even number.
    """
    if isinstance(size, Dimensions):
        return size.width, size.height
    if keyframe_size is None:
        return size.landscape_size
    width, height = keyframe_size
    short = size.short_side
    if width >= height:
        return _even(short * width / height), short
    return short, _even(short * height / width)


def _even(length: float) -> int:
    return 2 * round(length / 2)
