"""Output sizes of the contract: 16:9 for text-only, the keyframe's aspect otherwise."""

from __future__ import annotations

from reelforge.contract import Resolution


def output_size(resolution: Resolution, keyframe_size: tuple[int, int] | None) -> tuple[int, int]:
    """Width and height of the video, in pixels, both even.

    Text-only: 1366x768 or 1920x1080. With a keyframe of ``(width, height)``: its aspect
    ratio with the shorter side equal to the resolution's (768 or 1080), the longer side
    rounded to the nearest even number.
    """
    if keyframe_size is None:
        return resolution.landscape_size
    width, height = keyframe_size
    short = resolution.short_side
    if width >= height:
        return _even(short * width / height), short
    return short, _even(short * height / width)


def _even(length: float) -> int:
    return 2 * round(length / 2)
