from __future__ import annotations

import numpy as np
import pytest

from reelforge.errors import InvalidRequest
from reelforge.media.camera import CameraPath, Movement, parse_camera, plan_path


def test_brackets_are_shots_in_order_and_leave_the_text() -> None:
    script = parse_camera("A lighthouse [Truck left, Pan right, Zoom in] at dusk [shake]")
    assert script.shots == (
        (Movement.TRUCK_LEFT, Movement.PAN_RIGHT, Movement.ZOOM_IN),
        (Movement.SHAKE,),
    )
    assert script.text == "A lighthouse at dusk"


@pytest.mark.parametrize("movement", list(Movement))
def test_every_contract_movement_is_known(movement: Movement) -> None:
    assert parse_camera(f"x [{movement.value}]").shots == ((movement,),)


def test_brackets_without_any_movement_are_plain_text() -> None:
    script = parse_camera("Chorus [Verse 1] of a song")
    assert script.shots == ()
    assert script.text == "Chorus [Verse 1] of a song"


def test_unknown_movement_in_a_camera_bracket_names_it() -> None:
    with pytest.raises(
        InvalidRequest, match=r"^prompt: unknown camera movement 'Spin' in \[Pan left, Spin\]"
    ):
        parse_camera("x [Pan left, Spin]")


def test_more_than_three_movements_in_one_bracket_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="has 4 camera movements; at most 3"):
        parse_camera("x [Pan left, Zoom in, Shake, Tilt up]")


@pytest.mark.parametrize(
    ("prompt", "hint"),
    [
        ("x [Pan sideways]", ""),
        ("x [Left pan]", "did you mean 'Pan left'? "),
        ("x [Spin around]", ""),
        ("x [Camera orbits the tower]", ""),
        ("x [In zoom]", "did you mean 'Zoom in'? "),
    ],
)
def test_a_bracket_that_looks_like_a_command_but_names_none_is_refused(
    prompt: str, hint: str
) -> None:
    """Not silently the default push-in: the bracket is refused, naming it."""
    bracket = prompt[prompt.index("[") :]
    expected = f"prompt: unknown camera movement '{bracket[1:-1]}' in {bracket}; {hint}known: "
    with pytest.raises(InvalidRequest) as refused:
        parse_camera(prompt)
    assert refused.value.message.startswith(expected)


@pytest.mark.parametrize(
    ("prompt", "shots"),
    [
        ("The camera pans left across the bay", ((Movement.PAN_LEFT,),)),
        ("Slowly zooming in, then the camera tilts up", ((Movement.ZOOM_IN,), (Movement.TILT_UP,))),
        ("A tracking shot of a runner", ((Movement.TRACKING_SHOT,),)),
        ("Static shot of a vase", ((Movement.STATIC_SHOT,),)),
        ("Handheld with camera shake", ((Movement.SHAKE,),)),
        (
            "The crane pedestals down; trucking right",
            ((Movement.PEDESTAL_DOWN,), (Movement.TRUCK_RIGHT,)),
        ),
        ("A dog shakes off water", ()),
    ],
)
def test_plain_words(prompt: str, shots: tuple[tuple[Movement, ...], ...]) -> None:
    assert parse_camera(prompt).shots == shots


def test_brackets_win_over_plain_words() -> None:
    assert parse_camera("the camera pans left [Zoom out]").shots == ((Movement.ZOOM_OUT,),)


def _inside(path: CameraPath) -> bool:
    """Whether every frame's viewport lies inside the picture (in frame fractions)."""
    half = 0.5 / path.zoom
    return bool(
        np.all(np.abs(path.u) <= 0.5 - half + 1e-9) and np.all(np.abs(path.v) <= 0.5 - half + 1e-9)
    )


@pytest.mark.parametrize(
    "movement", [m for m in Movement if m not in (Movement.PULL_OUT, Movement.ZOOM_OUT)]
)
def test_camera_stays_inside_the_picture(movement: Movement) -> None:
    path = plan_path(
        parse_camera(f"[{movement.value}]"), 150, 25, seed=3, pinned_start=True, pinned_end=False
    )
    assert path.is_still(0)
    assert _inside(path)


@pytest.mark.parametrize("movement", [Movement.PULL_OUT, Movement.ZOOM_OUT])
def test_outward_moves_on_a_designed_card_start_close_and_stay_inside(movement: Movement) -> None:
    path = plan_path(
        parse_camera(f"[{movement.value}]"), 150, 25, seed=3, pinned_start=False, pinned_end=False
    )
    assert path.zoom[0] > path.zoom[-1] == pytest.approx(1.0)
    assert _inside(path)


def test_pinned_end_comes_home() -> None:
    path = plan_path(
        parse_camera("[Pan left, Zoom in] [Shake]"),
        150,
        25,
        seed=3,
        pinned_start=True,
        pinned_end=True,
    )
    assert path.is_still(0)
    assert path.is_still(149)
    assert path.zoom.max() > 1.2


def test_motion_is_eased() -> None:
    path = plan_path(
        parse_camera("[Truck right]"), 150, 25, seed=0, pinned_start=True, pinned_end=False
    )
    speed = np.abs(np.diff(path.u))
    assert speed[0] < speed[75] / 20
    assert speed[-1] < speed[75] / 20


def test_no_command_is_a_gentle_push_in() -> None:
    path = plan_path(parse_camera("a vase"), 150, 25, seed=0, pinned_start=True, pinned_end=False)
    assert 1.05 < path.zoom[-1] < 1.2
    assert np.all(np.diff(path.zoom) >= 0)


def test_shake_is_seeded_and_smooth() -> None:
    script = parse_camera("[Shake]")
    one = plan_path(script, 150, 25, seed=1, pinned_start=True, pinned_end=False)
    again = plan_path(script, 150, 25, seed=1, pinned_start=True, pinned_end=False)
    other = plan_path(script, 150, 25, seed=2, pinned_start=True, pinned_end=False)
    assert np.array_equal(one.u, again.u)
    assert not np.array_equal(one.u, other.u)
    amplitude = np.abs(one.u).max()
    assert amplitude > 0.003
    # A jitter drawn afresh each frame would change by about its amplitude from frame to frame.
    assert np.abs(np.diff(one.u)).max() < 0.7 * amplitude
    assert np.abs(np.diff(one.u, 2)).max() < 0.5 * amplitude
