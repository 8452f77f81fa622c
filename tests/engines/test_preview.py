from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from reelforge.contract import Resolution
from reelforge.engines.base import VideoRequest
from reelforge.engines.preview import PreviewEngine
from reelforge.errors import Cancelled
from reelforge.media.camera import Movement, parse_camera, plan_path
from reelforge.media.encoder import encode_mp4
from tests.conftest import FAST, Renderer
from tests.pictures import disk_scene, sharpness, textured
from tests.videos import mae, motion, probe

WIDTH, HEIGHT = 1366, 768
MATCH = 4.0
"""Largest mean absolute error of a frame that shows a given picture (the encoder's loss)."""


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return textured(WIDTH, HEIGHT, seed=7)


def test_text_only_768p_is_1366x768_150_frames_h264_at_25_fps(render: Renderer) -> None:
    path, _ = render("A lighthouse at dusk")
    clip = probe(path)
    assert (clip.codec, clip.pix_fmt) == ("h264", "yuv420p")
    assert (clip.width, clip.height, clip.fps, len(clip.frames)) == (1366, 768, 25, 150)


def test_text_only_1080p_is_1920x1080(render: Renderer) -> None:
    clip = probe(render("A lighthouse at dusk", resolution=Resolution.P1080)[0])
    assert (clip.width, clip.height, len(clip.frames)) == (1920, 1080, 150)


def test_ten_seconds_is_250_frames(render: Renderer) -> None:
    clip = probe(render("A lighthouse at dusk", duration_s=10)[0])
    assert (len(clip.frames), clip.fps) == (250, 25)


def test_title_card_shows_the_prompt_on_its_own_gradient(render: Renderer) -> None:
    one = probe(render("A lighthouse at dusk [Static shot]")[0]).frames[0]
    other = probe(render("A forest in the rain [Static shot]")[0]).frames[0]
    assert mae(one, other) > 10  # a different gradient per prompt
    centre = one[300:470, 300:1066]
    assert (centre.min(axis=2) > 200).sum() > 2000  # light text in the middle
    assert (one[:100].min(axis=2) > 200).sum() == 0  # and none near the top


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
    render: Renderer,
    image_size: tuple[int, int],
    resolution: Resolution,
    video_size: tuple[int, int],
) -> None:
    image = textured(*image_size)
    clip = probe(render("x [Static shot]", first_frame=image, resolution=resolution)[0])
    assert (clip.width, clip.height) == video_size
    expected = np.asarray(image.resize(video_size, Image.Resampling.LANCZOS))
    assert mae(clip.frames[0], expected) < MATCH


def test_frame_zero_is_the_first_image_and_the_last_is_the_last_image(
    render: Renderer, photo: Image.Image
) -> None:
    end = textured(WIDTH, HEIGHT, seed=8)
    clip = probe(render("A walk [Pan left, Zoom in]", first_frame=photo, last_frame=end)[0])
    assert mae(clip.frames[0], photo) < MATCH
    assert mae(clip.frames[-1], end) < MATCH
    middle = clip.frames[75]
    assert mae(middle, photo) > 10
    assert mae(middle, end) > 10


def test_a_last_image_of_another_shape_is_cover_cropped(
    render: Renderer, photo: Image.Image
) -> None:
    end = textured(800, 800, seed=9)
    clip = probe(render("x", first_frame=photo, last_frame=end)[0])
    assert (
        mae(clip.frames[-1], ImageOps.fit(end, (WIDTH, HEIGHT), Image.Resampling.LANCZOS)) < MATCH
    )


def test_a_last_image_alone_sets_the_size_and_ends_the_clip(render: Renderer) -> None:
    end = textured(600, 900, seed=9)
    clip = probe(render("A portrait", last_frame=end)[0])
    assert (clip.width, clip.height) == (768, 1152)
    assert mae(clip.frames[-1], end.resize((768, 1152), Image.Resampling.LANCZOS)) < MATCH


def test_the_morph_moves_shapes_along_the_flow_not_a_crossfade(render: Renderer) -> None:
    start, end = disk_scene(WIDTH, HEIGHT, 0.42), disk_scene(WIDTH, HEIGHT, 0.58)
    clip = probe(render("[Static shot]", first_frame=start, last_frame=end)[0])
    middle = clip.frames[len(clip.frames) // 2].astype(float)
    crossfade = (np.asarray(start, float) + np.asarray(end, float)) / 2
    assert mae(middle, start) > 3
    assert mae(middle, end) > 3
    assert mae(middle, crossfade) > 3
    # Halfway, the disk is halfway: its colour sits at the centre, where neither end has it.
    disk, backdrop = np.array([235, 200, 60]), np.array([60, 70, 90])
    centre = middle[HEIGHT // 2 - 20 : HEIGHT // 2 + 20, WIDTH // 2 - 20 : WIDTH // 2 + 20]
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
    render: Renderer, photo: Image.Image, movement: Movement
) -> None:
    prompt = f"A field [{movement.value}]"
    clip = probe(render(prompt, first_frame=photo)[0])
    measured = motion(clip.frames[60], clip.frames[90])
    sx, sy, sz = DIRECTIONS[movement]
    if sx:
        assert sx * measured.dx > 10, measured
    if sy:
        assert sy * measured.dy > 10, measured
    if sz:
        assert sz * (measured.scale - 1) > 0.02, measured
    # Rough size: what the planned path says, within a quarter.
    path = plan_path(parse_camera(prompt), 150, 25, seed=0, pinned_start=True, pinned_end=False)
    z0, z1 = path.zoom[60], path.zoom[90]
    assert measured.dx == pytest.approx(z1 * (path.u[60] - path.u[90]) * WIDTH, rel=0.25, abs=2)
    assert measured.dy == pytest.approx(z1 * (path.v[60] - path.v[90]) * HEIGHT, rel=0.25, abs=2)
    assert measured.scale == pytest.approx(z1 / z0, rel=0.01)
    # No black borders: every frame's outer strips keep the picture's brightness.
    for frame in clip.frames[::10]:
        for strip in (frame[:4], frame[-4:], frame[:, :4], frame[:, -4:]):
            assert strip.mean() > 60


@pytest.mark.parametrize("movement", [Movement.PULL_OUT, Movement.ZOOM_OUT])
def test_pulling_back_from_a_first_frame_shows_a_soft_surround_not_a_mirror(
    render: Renderer, photo: Image.Image, movement: Movement
) -> None:
    clip = probe(render(f"A field [{movement.value}]", first_frame=photo)[0])
    last = clip.frames[-1]
    centre = last[HEIGHT // 4 : 3 * HEIGHT // 4, WIDTH // 4 : 3 * WIDTH // 4]
    for strip in (last[:, :24], last[:, -24:]):  # beyond the picture's left and right edges
        assert sharpness(strip) < sharpness(centre) / 4
        assert strip.mean() > 60


def test_combined_movements_in_one_bracket_all_happen(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("[Truck left, Pedestal up, Zoom in]", first_frame=photo)[0])
    measured = motion(clip.frames[60], clip.frames[90])
    assert measured.dx > 5, measured
    assert measured.dy > 5, measured
    assert measured.scale > 1.02, measured


def test_several_brackets_play_in_order(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("[Pan left] then [Pan right]", first_frame=photo)[0])
    first_half = motion(clip.frames[30], clip.frames[45])
    second_half = motion(clip.frames[105], clip.frames[120])
    assert first_half.dx > 5, first_half
    assert second_half.dx < -5, second_half


def test_plain_words_move_the_camera_like_brackets(render: Renderer, photo: Image.Image) -> None:
    worded = probe(render("The camera pans left over the field", first_frame=photo)[0])
    bracketed = probe(render("Over the field [Pan left]", first_frame=photo)[0])
    for index in (0, 75, 149):
        assert mae(worded.frames[index], bracketed.frames[index]) < 1


def test_no_command_is_a_gentle_push_in(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("A quiet field", first_frame=photo)[0])
    scale = motion(clip.frames[0], clip.frames[-1]).scale
    assert 1.05 < scale < 1.2


def test_static_shot_holds_still(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("A quiet field [Static shot]", first_frame=photo)[0])
    assert mae(clip.frames[0], clip.frames[-1]) < 1.5


def test_shake_is_a_smooth_jitter_that_dies_down(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("[Shake]", first_frame=photo, seed=4)[0])
    steps = [motion(clip.frames[i], clip.frames[i + 1]).dx for i in range(40, 110, 2)]
    assert max(abs(s) for s in steps) > 0.5
    assert sum(1 for a, b in itertools.pairwise(steps) if a * b < 0) >= 2
    assert mae(clip.frames[0], clip.frames[-1]) < 4  # faded out at the end of its shot


def test_tracking_shot_glides_sideways_and_closes_in(render: Renderer, photo: Image.Image) -> None:
    clip = probe(render("[Tracking shot]", first_frame=photo)[0])
    measured = motion(clip.frames[60], clip.frames[90])
    assert abs(measured.dx) > 10, measured
    assert measured.scale > 1.0, measured


def test_same_request_same_bytes(render: Renderer, photo: Image.Image) -> None:
    first, _ = render("A field [Shake, Pan left]", first_frame=photo, seed=11)
    second, _ = render("A field [Shake, Pan left]", first_frame=photo, seed=11)
    assert first.read_bytes() == second.read_bytes()


def test_the_seed_changes_the_shake(render: Renderer, photo: Image.Image) -> None:
    one = probe(render("[Shake]", first_frame=photo, seed=1)[0])
    other = probe(render("[Shake]", first_frame=photo, seed=2)[0])
    assert mae(one.frames[75], other.frames[75]) > 1


def test_frames_are_rendered_only_as_the_encoder_asks(photo: Image.Image) -> None:
    reports: list[tuple[int, int]] = []
    request = VideoRequest(
        prompt="[Pan left]", duration_s=6, resolution=Resolution.P768, first_frame=photo
    )
    video = PreviewEngine().generate(request, lambda done, total: reports.append((done, total)))
    assert reports == []
    next(video.frames)
    assert reports == [(1, 150)]


def test_raising_from_on_step_cancels_and_leaves_no_file(
    tmp_path: Path, photo: Image.Image
) -> None:
    def cancel_at_ten(done: int, total: int) -> None:
        if done == 10:
            raise Cancelled

    request = VideoRequest(prompt="x", duration_s=6, resolution=Resolution.P768, first_frame=photo)
    video = PreviewEngine().generate(request, cancel_at_ten)
    with pytest.raises(Cancelled):
        encode_mp4(video, tmp_path / "out.mp4", FAST)
    assert list(tmp_path.iterdir()) == []


def test_the_scale_setting_renders_smaller_with_the_same_length(tmp_path: Path) -> None:
    request = VideoRequest(prompt="[Pan left]", duration_s=6, resolution=Resolution.P768)
    video = PreviewEngine(scale=0.1).generate(request, lambda done, total: None)
    encode_mp4(video, tmp_path / "small.mp4", FAST)
    clip = probe(tmp_path / "small.mp4")
    assert (clip.width, clip.height, len(clip.frames), clip.fps) == (136, 76, 150, 25)


@pytest.mark.parametrize("scale", [0.0, 1.5])
def test_a_scale_outside_0_to_1_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="preview scale must be in"):
        PreviewEngine(scale=scale)
