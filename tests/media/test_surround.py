from __future__ import annotations

import cv2
import numpy as np
import pytest

from reelforge.media.camera import parse_camera, plan_path
from reelforge.media.surround import Surround
from tests.pictures import sharpness, textured

WIDTH, HEIGHT, PAD = 320, 180, 60


@pytest.fixture(scope="module")
def extended() -> tuple[np.ndarray, np.ndarray]:
    # Fine detail everywhere: pixel noise over a smooth texture.
    noise = np.random.default_rng(3).integers(-30, 31, (HEIGHT, WIDTH, 3))
    picture = np.clip(np.asarray(textured(WIDTH, HEIGHT, seed=3)) + noise, 0, 255).astype(np.uint8)
    return picture, Surround(WIDTH, HEIGHT, PAD).extend(picture)


def test_the_picture_sits_unchanged_in_the_middle(extended: tuple[np.ndarray, np.ndarray]) -> None:
    picture, canvas = extended
    assert canvas.shape == (HEIGHT + 2 * PAD, WIDTH + 2 * PAD, 3)
    assert np.array_equal(canvas[PAD : PAD + HEIGHT, PAD : PAD + WIDTH], picture)


def test_the_mirror_joins_the_edge_and_softens_with_distance(
    extended: tuple[np.ndarray, np.ndarray],
) -> None:
    picture, canvas = extended
    # Next to the edge: the picture mirrored (the column beyond the left edge is column 1).
    beside = canvas[PAD : PAD + HEIGHT, PAD - 1].astype(int)
    assert np.abs(beside - picture[:, 1]).mean() < 3
    # Far out: soft, where a plain mirror would be as sharp as the picture.
    far = canvas[PAD : PAD + HEIGHT, : PAD // 2]
    mirror = cv2.copyMakeBorder(picture, PAD, PAD, PAD, PAD, cv2.BORDER_REFLECT_101)
    assert sharpness(far) < sharpness(mirror[PAD : PAD + HEIGHT, : PAD // 2]) / 10
    assert far.min() > 0  # and no black


def test_a_picture_of_another_size_or_no_pad_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 pixel"):
        Surround(WIDTH, HEIGHT, 0)
    with pytest.raises(ValueError, match="expected a 320x180 picture"):
        Surround(WIDTH, HEIGHT, PAD).extend(np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8))


@pytest.mark.parametrize(
    ("prompt", "pinned_start", "beyond"),
    [
        ("[Pull out]", True, True),
        ("[Zoom out]", True, True),
        ("[Pull out]", False, False),  # a title card: the path is lifted to stay inside
        ("[Push in]", True, False),
        ("[Pan left, Shake]", True, False),  # offsets are backed by zoom
        ("a quiet field", True, False),
    ],
)
def test_the_path_says_how_far_past_the_picture_it_looks(
    prompt: str, pinned_start: bool, beyond: bool
) -> None:
    path = plan_path(
        parse_camera(prompt), 150, 25, seed=1, pinned_start=pinned_start, pinned_end=False
    )
    reach = path.reach(1366, 768)
    assert (reach > 0) is beyond
    if beyond:  # the widest view's overhang on the long side, plus the interpolation margin
        overhang = (1366 / path.zoom.min() - 1366) / 2
        assert reach == pytest.approx(overhang + 2, abs=1.5)
