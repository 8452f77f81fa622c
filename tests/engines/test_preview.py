"""The preview engine: MP4s checked with PyAV where the file is the point; pictures and camera
moves checked on the frames ``generate`` yields at half size (no encode, a quarter of the
pixels: the camera path is the same in frame fractions)."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from reelforge.engines import preview
from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.errors import Cancelled, InvalidRequest
from reelforge.media.camera import Movement, parse_camera, plan_path
from reelforge.media.encoder import encode_mp4
from reelforge.media.title import gradient
from reelforge.request import Dimensions, JobRequest, Resolution
from reelforge.video import Frame, Video
from tests.conftest import FAST, Renderer
from tests.pictures import disk_scene, sharpness, textured
from tests.videos import mae, motion, probe

WIDTH, HEIGHT = 1366, 768
SCALE = 0.5
W, H = 684, 384
"""The frames' size at ``SCALE`` (1366x768 halved, to even sides)."""
MATCH = 4.0
"""Largest mean absolute error of a frame that shows a given picture."""


def nothing(done: int, total: int) -> None:
    """An ``on_step`` that ignores progress."""


def generate(
    prompt: str,
    *,
    first_frame: Image.Image | None = None,
    last_frame: Image.Image | None = None,
    scale: float = SCALE,
    **fields: Any,
) -> Video:
    request = JobRequest(prompt=prompt, **fields)
    return PreviewEngine(scale=scale).generate(request, Keyframes(first_frame, last_frame), nothing)


def frames(prompt: str, *, upto: int | None = None, **fields: Any) -> list[Frame]:
    """The frames of ``generate(prompt, **fields)`` (only the first ``upto`` are rendered)."""
    return list(itertools.islice(generate(prompt, **fields).frames, upto))


def small(image: Image.Image) -> Image.Image:
    """``image`` at the size the halved 768P frames have."""
    return image.resize((W, H), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return textured(WIDTH, HEIGHT, seed=7)


def test_text_only_768p_is_1366x768_150_frames_h264_at_25_fps(render: Renderer) -> None:
    path, _ = render("A lighthouse at dusk")
    clip = probe(path)
    assert (clip.codec, clip.pix_fmt) == ("h264", "yuv420p")
    assert (clip.width, clip.height, clip.fps, len(clip.frames)) == (1366, 768, 25, 150)


def test_text_only_1080p_is_1920x1080() -> None:
    video = generate("A lighthouse at dusk", size=Resolution.P1080, scale=1)
    assert (video.width, video.height, video.frame_count, video.fps) == (1920, 1080, 150, 25)
    assert next(video.frames).shape == (1080, 1920, 3)


def test_ten_seconds_is_250_frames() -> None:
    video = generate("A lighthouse at dusk", duration_s=10)
    assert (video.frame_count, video.fps, video.duration_s) == (250, 25, 10)
    assert len(list(video.frames)) == 250


def test_1280x720_for_4_seconds_is_an_mp4_of_that_size_and_100_frames(tmp_path: Path) -> None:
    video = generate("A harbour [Pan left]", size=Dimensions(1280, 720), duration_s=4, scale=1)
    encode_mp4(video, tmp_path / "clip.mp4", FAST)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (1280, 720, Fraction(25))
        assert sum(1 for _ in container.decode(stream)) == 100
        seconds = float((stream.duration or 0) * Fraction(stream.time_base or 0))
    assert seconds == pytest.approx(4.0)


@pytest.mark.parametrize(("fps", "seconds", "count"), [(8, 2, 16), (12, 3, 36), (60, 1, 60)])
def test_a_requested_frame_rate_is_the_mp4s(
    tmp_path: Path, fps: int, seconds: int, count: int
) -> None:
    video = generate("[Zoom in]", size=Dimensions(320, 256), duration_s=seconds, fps=fps, scale=1)
    assert (video.fps, video.frame_count, video.meta["fps"]) == (fps, count, fps)
    encode_mp4(video, tmp_path / "clip.mp4", FAST)
    clip = probe(tmp_path / "clip.mp4")
    assert (clip.fps, len(clip.frames)) == (fps, count)


def test_the_camera_keeps_its_timing_at_another_frame_rate(photo: Image.Image) -> None:
    at_25 = frames("A field [Pan left]", first_frame=photo, duration_s=2)
    at_50 = frames("A field [Pan left]", first_frame=photo, duration_s=2, fps=50)
    assert len(at_50) == 2 * len(at_25) == 100
    # The same second of the clip moves the picture as far at either rate.
    for start, end in ((0, 25), (25, 49)):
        slow, fast = motion(at_25[start], at_25[end]), motion(at_50[2 * start], at_50[2 * end])
        assert slow.dx > 5, slow
        assert fast.dx == pytest.approx(slow.dx, rel=0.1), (slow, fast)


def test_a_first_frame_of_another_aspect_is_cover_cropped_to_explicit_dimensions() -> None:
    portrait = textured(600, 900, seed=3)
    video = generate(
        "A portrait [Static shot]", first_frame=portrait, size=Dimensions(512, 288), scale=1
    )
    assert (video.width, video.height) == (512, 288)
    first = next(video.frames)
    covered = np.asarray(ImageOps.fit(portrait, (512, 288), Image.Resampling.LANCZOS))
    assert mae(first, covered) < 1
    assert mae(first, portrait.resize((512, 288), Image.Resampling.LANCZOS)) > 10  # not stretched


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"size": Dimensions(1281, 720)}, "size"),
        ({"size": Dimensions(320, 254)}, "size"),
        ({"size": Dimensions(2702, 1520)}, "size"),
        ({"duration_s": 21}, "duration"),
        ({"duration_s": 0}, "duration"),
        ({"fps": 61}, "fps"),
        ({"fps": 7}, "fps"),
        ({"fps": 0}, "fps"),
    ],
)
def test_what_the_capabilities_do_not_offer_is_refused(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        generate("x", **fields)
    assert raised.value.field == field


def test_the_smallest_and_largest_sizes_and_lengths_are_made() -> None:
    tall = generate("x", size=Dimensions(256, 2700), duration_s=20, scale=1)
    assert (tall.width, tall.height, tall.frame_count) == (256, 2700, 500)
    assert next(tall.frames).shape == (2700, 256, 3)
    short = generate("x", size=Dimensions(256, 256), duration_s=1)
    assert short.frame_count == 25


def test_title_card_shows_the_prompt_on_its_own_gradient() -> None:
    one = frames("A lighthouse at dusk [Static shot]", upto=1)[0]
    other = frames("A forest in the rain [Static shot]", upto=1)[0]
    assert mae(one, other) > 10  # a different gradient per prompt
    centre = one[150:235, 150:533]
    assert (centre.min(axis=2) > 200).sum() > 500  # light text in the middle
    assert (one[:50].min(axis=2) > 200).sum() == 0  # and none near the top


COMBINED = [
    "[Truck left, Zoom in]",
    "[Pan right, Tilt down, Zoom in]",
    "[Truck right, Pedestal down, Push in]",
    "[Tracking shot, Zoom in, Shake]",
    "[Pan left, Truck left, Tilt up] [Pan right, Truck right, Zoom in]",
    "[Zoom out] [Pan left, Pedestal up] [Zoom in, Tilt down]",
    # Opposite moves with zooms that keep no part of the card in view throughout:
    "[Truck left, Zoom in, Tracking shot] [Pan right, Push in, Zoom in] [Tilt down, Zoom in]",
]


class _Unlettered:
    """Stands in for ``Lettered``: a layer that adds nothing."""

    def __init__(self, *args: object) -> None:
        pass

    def over(self, picture: Frame) -> Frame:
        return picture


@pytest.mark.parametrize("camera", [f"[{m.value}]" for m in Movement] + COMBINED)
def test_the_title_stays_wholly_in_frame_for_every_camera_move(
    camera: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = f"A lighthouse at dusk, waves breaking on the rocks below {camera}"
    lettered = frames(prompt, scale=0.25, duration_s=1)
    monkeypatch.setattr(preview, "title_card", lambda text, w, h, area=None: gradient(text, w, h))
    monkeypatch.setattr(preview, "Lettered", _Unlettered)
    bare = frames(prompt, scale=0.25, duration_s=1)
    for index, (one, other) in enumerate(zip(lettered, bare, strict=True)):
        text = np.abs(one.astype(int) - other).max(axis=2) > 24
        rows, columns = np.flatnonzero(text.any(axis=1)), np.flatnonzero(text.any(axis=0))
        assert len(rows) > 10, f"frame {index} shows no text"
        height, width = text.shape
        inside = (
            rows[0] > 0 and rows[-1] < height - 1 and columns[0] > 0 and columns[-1] < width - 1
        )
        assert inside, f"frame {index}: text cut at an edge"


@pytest.mark.parametrize(
    ("image_size", "resolution", "video_size"),
    [
        ((600, 900), Resolution.P768, (768, 1152)),
        (
            (1000, 1487),
            Resolution.P768,
            (768, 1142),
        ),  # the reference's Mona Lisa came back 768x1142
        ((900, 600), Resolution.P1080, (1620, 1080)),
        ((1001, 1000), Resolution.P768, (768, 768)),
    ],
)
def test_first_frame_keeps_its_aspect_with_the_short_side_of_the_resolution(
    image_size: tuple[int, int],
    resolution: Resolution,
    video_size: tuple[int, int],
) -> None:
    image = textured(*image_size)
    video = generate("x [Static shot]", first_frame=image, size=resolution, scale=1)
    assert (video.width, video.height) == video_size
    expected = np.asarray(image.resize(video_size, Image.Resampling.LANCZOS))
    assert mae(next(video.frames), expected) < 1


def test_frame_zero_is_the_first_image_and_the_last_is_the_last_image(photo: Image.Image) -> None:
    end = textured(WIDTH, HEIGHT, seed=8)
    clip = frames("A walk [Pan left, Zoom in]", first_frame=photo, last_frame=end, duration_s=2)
    assert mae(clip[0], small(photo)) < MATCH
    assert mae(clip[-1], small(end)) < MATCH
    middle = clip[len(clip) // 2]
    assert mae(middle, small(photo)) > 10
    assert mae(middle, small(end)) > 10


def test_a_last_image_of_another_shape_is_cover_cropped(photo: Image.Image) -> None:
    end = textured(800, 800, seed=9)
    clip = frames("x", first_frame=photo, last_frame=end, duration_s=1)
    assert mae(clip[-1], ImageOps.fit(end, (W, H), Image.Resampling.LANCZOS)) < MATCH


def test_a_last_image_alone_sets_the_size_and_ends_the_clip() -> None:
    end = textured(600, 900, seed=9)
    video = generate("A portrait", last_frame=end, duration_s=1)
    assert (video.width, video.height, video.meta["width"]) == (384, 576, 384)  # 768x1152 halved
    last = list(video.frames)[-1]
    assert mae(last, end.resize((384, 576), Image.Resampling.LANCZOS)) < MATCH


def test_the_morph_moves_shapes_along_the_flow_not_a_crossfade() -> None:
    start, end = disk_scene(W, H, 0.42), disk_scene(W, H, 0.58)
    clip = frames("[Static shot]", first_frame=start, last_frame=end, duration_s=2)
    middle = clip[len(clip) // 2].astype(float)
    crossfade = (np.asarray(start, float) + np.asarray(end, float)) / 2
    assert mae(middle, start) > 3
    assert mae(middle, end) > 3
    assert mae(middle, crossfade) > 3
    # Halfway, the disk is halfway: its colour sits at the centre, where neither end has it.
    disk, backdrop = np.array([235, 200, 60]), np.array([60, 70, 90])
    centre = middle[H // 2 - 10 : H // 2 + 10, W // 2 - 10 : W // 2 + 10]
    centre_colour = centre.reshape(-1, 3).mean(axis=0)
    assert np.abs(centre_colour - disk).mean() < np.abs(centre_colour - backdrop).mean() / 3


# Content motion each command must cause between frames 60 and 90 (mid-clip): the sign of
# dx (content moving right), dy (content moving down) and of scale - 1 (content growing).
DIRECTIONS = {
    Movement.TRUCK_LEFT: (1, 0, 0),
    Movement.TRUCK_RIGHT: (-1, 0, 0),
    Movement.PAN_LEFT: (1, 0, 0),
    Movement.PAN_RIGHT: (-1, 0, 0),
    Movement.PEDESTAL_UP: (0, 1, 0),
    Movement.PEDESTAL_DOWN: (0, -1, 0),
    Movement.TILT_UP: (0, 1, 0),
    Movement.TILT_DOWN: (0, -1, 0),
    Movement.PUSH_IN: (0, 0, 1),
    Movement.ZOOM_IN: (0, 0, 1),
    Movement.PULL_OUT: (0, 0, -1),
    Movement.ZOOM_OUT: (0, 0, -1),
}


@pytest.mark.parametrize("movement", list(DIRECTIONS))
def test_each_camera_command_moves_the_content_the_right_way(
    photo: Image.Image, movement: Movement
) -> None:
    prompt = f"A field [{movement.value}]"
    clip = frames(prompt, first_frame=photo, upto=91)
    measured = motion(clip[60], clip[90])
    sx, sy, sz = DIRECTIONS[movement]
    if sx:
        assert sx * measured.dx > 5, measured
    if sy:
        assert sy * measured.dy > 5, measured
    if sz:
        assert sz * (measured.scale - 1) > 0.02, measured
    # Rough size: what the planned path says, within a quarter.
    path = plan_path(parse_camera(prompt), 150, 25, seed=0, pinned_start=True, pinned_end=False)
    z0, z1 = path.zoom[60], path.zoom[90]
    assert measured.dx == pytest.approx(z1 * (path.u[60] - path.u[90]) * W, rel=0.25, abs=1)
    assert measured.dy == pytest.approx(z1 * (path.v[60] - path.v[90]) * H, rel=0.25, abs=1)
    assert measured.scale == pytest.approx(z1 / z0, rel=0.01)
    # No black borders: every frame's outer strips keep the picture's brightness.
    for frame in clip[::10]:
        for strip in (frame[:2], frame[-2:], frame[:, :2], frame[:, -2:]):
            assert strip.mean() > 60


@pytest.mark.parametrize("movement", [Movement.PULL_OUT, Movement.ZOOM_OUT])
def test_pulling_back_from_a_first_frame_shows_a_soft_surround_not_a_mirror(
    photo: Image.Image, movement: Movement
) -> None:
    last = frames(f"A field [{movement.value}]", first_frame=photo)[-1]
    centre = last[H // 4 : 3 * H // 4, W // 4 : 3 * W // 4]
    for strip in (last[:, :12], last[:, -12:]):  # beyond the picture's left and right edges
        assert sharpness(strip) < sharpness(centre) / 4
        assert strip.mean() > 60


def test_combined_movements_in_one_bracket_all_happen(photo: Image.Image) -> None:
    clip = frames("[Truck left, Pedestal up, Zoom in]", first_frame=photo, upto=91)
    measured = motion(clip[60], clip[90])
    assert measured.dx > 2.5, measured
    assert measured.dy > 2.5, measured
    assert measured.scale > 1.02, measured


def test_several_brackets_play_in_order(photo: Image.Image) -> None:
    clip = frames("[Pan left] then [Pan right]", first_frame=photo, upto=121)
    first_half = motion(clip[30], clip[45])
    second_half = motion(clip[105], clip[120])
    assert first_half.dx > 2.5, first_half
    assert second_half.dx < -2.5, second_half


def test_plain_words_move_the_camera_like_brackets(photo: Image.Image) -> None:
    worded = frames("The camera pans left over the field", first_frame=photo)
    bracketed = frames("Over the field [Pan left]", first_frame=photo)
    for index in (0, 75, 149):
        assert mae(worded[index], bracketed[index]) < 1


def test_no_command_is_a_gentle_push_in(photo: Image.Image) -> None:
    clip = frames("A quiet field", first_frame=photo)
    scale = motion(clip[0], clip[-1]).scale
    assert 1.05 < scale < 1.2


def test_static_shot_holds_still(photo: Image.Image) -> None:
    clip = frames("A quiet field [Static shot]", first_frame=photo)
    assert mae(clip[0], clip[-1]) < 1.5


def test_shake_is_a_smooth_jitter_that_dies_down(photo: Image.Image) -> None:
    clip = frames("[Shake]", first_frame=photo, seed=4)
    steps = [motion(clip[i], clip[i + 1]).dx for i in range(40, 110, 2)]
    assert max(abs(s) for s in steps) > 0.25
    assert sum(1 for a, b in itertools.pairwise(steps) if a * b < 0) >= 2
    assert mae(clip[0], clip[-1]) < 4  # faded out at the end of its shot


def test_tracking_shot_glides_sideways_and_closes_in(photo: Image.Image) -> None:
    clip = frames("[Tracking shot]", first_frame=photo, upto=91)
    measured = motion(clip[60], clip[90])
    assert abs(measured.dx) > 5, measured
    assert measured.scale > 1.0, measured


def test_same_request_same_bytes(tmp_path: Path, photo: Image.Image) -> None:
    paths = [tmp_path / "one.mp4", tmp_path / "two.mp4"]
    for path in paths:
        video = generate("A field [Shake, Pan left]", first_frame=photo, seed=11, duration_s=2)
        encode_mp4(video, path, FAST)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_the_seed_changes_the_shake(photo: Image.Image) -> None:
    one = frames("[Shake]", first_frame=photo, seed=1, upto=76)
    other = frames("[Shake]", first_frame=photo, seed=2, upto=76)
    assert mae(one[75], other[75]) > 1


def test_frames_are_rendered_only_as_the_encoder_asks(photo: Image.Image) -> None:
    reports: list[tuple[int, int]] = []
    request = JobRequest(prompt="[Pan left]", duration_s=6)
    video = PreviewEngine().generate(
        request, Keyframes(first=photo), lambda done, total: reports.append((done, total))
    )
    assert reports == []
    next(video.frames)
    assert reports == [(1, 150)]


def test_raising_from_on_step_cancels_and_leaves_no_file(
    tmp_path: Path, photo: Image.Image
) -> None:
    def cancel_at_ten(done: int, total: int) -> None:
        if done == 10:
            raise Cancelled

    request = JobRequest(prompt="x", duration_s=6)
    video = PreviewEngine().generate(request, Keyframes(first=photo), cancel_at_ten)
    with pytest.raises(Cancelled):
        encode_mp4(video, tmp_path / "out.mp4", FAST)
    assert list(tmp_path.iterdir()) == []


def test_the_scale_setting_renders_smaller_with_the_same_length(tmp_path: Path) -> None:
    request = JobRequest(prompt="[Pan left]", duration_s=6)
    video = PreviewEngine(scale=0.1).generate(request, Keyframes(), nothing)
    encode_mp4(video, tmp_path / "small.mp4", FAST)
    clip = probe(tmp_path / "small.mp4")
    assert (clip.width, clip.height, len(clip.frames), clip.fps) == (136, 76, 150, 25)


@pytest.mark.parametrize("scale", [0.0, 1.5])
def test_a_scale_outside_0_to_1_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="preview scale must be in"):
        PreviewEngine(scale=scale)
