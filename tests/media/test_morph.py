"""The first-to-last morph, measured on picture pairs kept here.

Each pair knows what a clean middle looks like: for the same scene moved, the scene moved
part of the way (``middles``); for different scenes, either end, pixel by pixel. *Ghosting*
of a clip's middle frame M: the mean, over pixels, of the distance from M to the nearest
clean middle, divided by the mean distance between the two ends. Doubled objects and
crossfaded halves score high (a crossfade of different scenes: 0.5); a middle frame whose
every pixel is where one end's content should be, near 0. *Largest step*: the clip's largest
change between two frames over its mean change (a clip that jumps between the ends at once
scores about the number of frames; a smooth one, low).

``python -m tests.media.test_morph`` prints both for every pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.request import JobRequest
from reelforge.video import Frame
from tests.pictures import disk_scene, textured

W, H = 684, 384
FRAMES = 50
"""Two seconds at 25 fps, at half of 768P."""


Middles = Callable[[float], list[Image.Image]]
"""The clean middles of a pair at ``alpha`` (0: the first picture, 1: the last)."""


def _shapes(disk_x: float, square_x: float, backdrop: tuple[int, int, int]) -> Image.Image:
    """A disk in the upper half and a square in the lower half, at those shares of the width."""
    frame = np.full((H, W, 3), backdrop, np.uint8)
    cv2.circle(frame, (round(disk_x * W), H // 4), H // 6, (235, 200, 60), -1)
    side, centre = H // 6, round(square_x * W)
    cv2.rectangle(frame, (centre - side, H // 2 + 20), (centre + side, H - 20), (40, 160, 220), -1)
    return Image.fromarray(frame, "RGB")


def _moved(picture: Image.Image, dx: float, zoom: float) -> Image.Image:
    matrix = np.array([[zoom, 0, (1 - zoom) * W / 2 + dx], [0, zoom, (1 - zoom) * H / 2]])
    moved = cv2.warpAffine(np.asarray(picture), matrix, (W, H), borderMode=cv2.BORDER_REFLECT_101)
    return Image.fromarray(moved, "RGB")


def pairs() -> dict[str, tuple[Image.Image, Image.Image, Middles]]:
    """First and last pictures, and their clean middles: the same scene moved, different
    scenes."""
    scene, one, other = textured(W, H, seed=3), textured(W, H, seed=1), textured(W, H, seed=2)
    blue, red = (60, 70, 90), (90, 60, 70)
    apart = (_shapes(0.3, 2.0, blue), _shapes(-1.0, 0.65, red))
    return {
        "disk moves": (
            disk_scene(W, H, 0.4),
            disk_scene(W, H, 0.6),
            lambda a: [disk_scene(W, H, 0.4 + 0.2 * a)],
        ),
        "disk jumps across": (
            disk_scene(W, H, 0.2),
            disk_scene(W, H, 0.8),
            lambda a: [disk_scene(W, H, 0.2 + 0.6 * a)],
        ),
        "shapes pass": (
            _shapes(0.25, 0.75, blue),
            _shapes(0.75, 0.25, blue),
            lambda a: [_shapes(0.25 + 0.5 * a, 0.75 - 0.5 * a, blue)],
        ),
        "different objects": (*apart, lambda a: list(apart)),
        "unrelated textures": (one, other, lambda a: [one, other]),
        "camera moved": (scene, _moved(scene, 30, 1.1), lambda a: [_moved(scene, 30 * a, 1.1**a)]),
    }


def clip(first: Image.Image, last: Image.Image) -> list[Frame]:
    request = JobRequest(prompt="[Static shot]", duration_s=2)
    video = PreviewEngine(scale=0.5).generate(request, Keyframes(first, last), lambda d, t: None)
    return list(video.frames)


def ghosting(
    middle: Frame, first: Image.Image, last: Image.Image, clean: list[Image.Image]
) -> float:
    m = middle.astype(np.float32)
    nearest = np.min([np.abs(m - np.asarray(c, np.float32)).sum(axis=2) for c in clean], axis=0)
    ends = np.abs(np.asarray(first, np.float32) - np.asarray(last, np.float32)).sum(axis=2)
    return float(nearest.mean() / ends.mean())


def largest_step(frames: list[Frame]) -> float:
    steps = [np.abs(b.astype(np.float32) - a).mean() for a, b in itertools.pairwise(frames)]
    return float(max(steps) / np.mean(steps))


def measure(name: str) -> tuple[float, float]:
    first, last, middles = pairs()[name]
    frames = clip(first, last)
    x = (FRAMES // 2) / (FRAMES - 1)
    alpha = x * x * (3 - 2 * x)  # the engine's easing
    return ghosting(frames[FRAMES // 2], first, last, middles(alpha)), largest_step(frames)


@pytest.mark.parametrize(
    ("name", "most"),
    [
        # Before the trust and switch times, the middles scored 0.71, 0.98, 0.93, 0.49, 0.52 and
        # 0.09: two half-strength disks or squares, crossfaded pictures.
        ("disk moves", 0.6),
        ("disk jumps across", 0.6),
        ("shapes pass", 0.6),
        ("different objects", 0.3),
        ("unrelated textures", 0.3),
        ("camera moved", 0.2),
    ],
)
def test_the_middle_of_a_morph_shows_little_ghosting_and_moves_smoothly(
    name: str, most: float
) -> None:
    ghost, step = measure(name)
    assert ghost < most
    assert step < 4.0  # no jump: the largest change between frames is a few times the mean


if __name__ == "__main__":
    print(f"{'pair':22} ghosting  largest step")
    for pair in pairs():
        ghost, step = measure(pair)
        print(f"{pair:22} {ghost:8.3f}  {step:12.2f}")
