"""MiniMax's director syntax: camera commands parsed from a prompt, and the camera path.

A prompt carries movements in square brackets, up to three per bracket, e.g.
``A lighthouse at dusk [Truck left, Pan right, Zoom in]``; several brackets are played in
order, each over an equal share of the clip. Without brackets, the same movements written
in plain words ("the camera pans left") are used, each as its own shot.

The path is a pose per frame: log-zoom ``a`` and the viewport centre offset ``(u, v)`` as
fractions of the frame's width and height (``+u`` looks right, ``+v`` looks down). The
camera looks at a still picture, so ``[Pan left]`` moves the viewport left and the scene
moves right in the frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from reelforge.errors import InvalidRequest

FloatArray = npt.NDArray[np.float64]


class Movement(StrEnum):
    TRUCK_LEFT = "Truck left"
    TRUCK_RIGHT = "Truck right"
    PAN_LEFT = "Pan left"
    PAN_RIGHT = "Pan right"
    PUSH_IN = "Push in"
    PULL_OUT = "Pull out"
    PEDESTAL_UP = "Pedestal up"
    PEDESTAL_DOWN = "Pedestal down"
    TILT_UP = "Tilt up"
    TILT_DOWN = "Tilt down"
    ZOOM_IN = "Zoom in"
    ZOOM_OUT = "Zoom out"
    SHAKE = "Shake"
    TRACKING_SHOT = "Tracking shot"
    STATIC_SHOT = "Static shot"


MAX_MOVEMENTS_PER_BRACKET: Final = 3

# Displacement of one movement over its shot: (log-zoom, u, v); u, v in frame fractions.
_DELTAS: Final[dict[Movement, tuple[float, float, float]]] = {
    Movement.TRUCK_LEFT: (0.0, -0.08, 0.0),
    Movement.TRUCK_RIGHT: (0.0, 0.08, 0.0),
    Movement.PAN_LEFT: (0.0, -0.12, 0.0),
    Movement.PAN_RIGHT: (0.0, 0.12, 0.0),
    Movement.PEDESTAL_UP: (0.0, 0.0, -0.08),
    Movement.PEDESTAL_DOWN: (0.0, 0.0, 0.08),
    Movement.TILT_UP: (0.0, 0.0, -0.12),
    Movement.TILT_DOWN: (0.0, 0.0, 0.12),
    Movement.PUSH_IN: (math.log(1.25), 0.0, 0.0),
    Movement.PULL_OUT: (-math.log(1.25), 0.0, 0.0),
    Movement.ZOOM_IN: (math.log(1.4), 0.0, 0.0),
    Movement.ZOOM_OUT: (-math.log(1.4), 0.0, 0.0),
    Movement.TRACKING_SHOT: (math.log(1.08), 0.10, 0.0),
    Movement.SHAKE: (0.0, 0.0, 0.0),
    Movement.STATIC_SHOT: (0.0, 0.0, 0.0),
}
_DEFAULT_PUSH: Final = math.log(1.12)
_SHAKE_AMPLITUDE: Final = 0.008
_MAX_OFFSET: Final = 0.2

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_BY_NAME: Final = {m.value.lower(): m for m in Movement}
_BY_WORDS: Final = {frozenset(m.value.lower().split()): m for m in Movement}
CAMERA_WORDS: Final = frozenset(
    {"truck", "pan", "push", "pull", "pedestal", "tilt", "zoom", "shake", "tracking", "static"}
    | {"camera", "dolly", "orbit", "spin", "rotate", "crane"}
)
"""Words that make a bracket a camera command even when it names no movement: the verbs of
MiniMax's movements and a few from other directors' vocabularies."""
_PLAIN_WORDS: Final[tuple[tuple[Movement, str], ...]] = (
    (Movement.TRUCK_LEFT, r"truck(?:s|ed|ing)?\s+left"),
    (Movement.TRUCK_RIGHT, r"truck(?:s|ed|ing)?\s+right"),
    (Movement.PAN_LEFT, r"pan(?:s|ned|ning)?\s+left"),
    (Movement.PAN_RIGHT, r"pan(?:s|ned|ning)?\s+right"),
    (Movement.PUSH_IN, r"push(?:es|ed|ing)?\s+in\b"),
    (Movement.PULL_OUT, r"pull(?:s|ed|ing)?\s+out"),
    (Movement.PEDESTAL_UP, r"pedestal(?:s|ed|ing|led|ling)?\s+up"),
    (Movement.PEDESTAL_DOWN, r"pedestal(?:s|ed|ing|led|ling)?\s+down"),
    (Movement.TILT_UP, r"tilt(?:s|ed|ing)?\s+up"),
    (Movement.TILT_DOWN, r"tilt(?:s|ed|ing)?\s+down"),
    (Movement.ZOOM_IN, r"zoom(?:s|ed|ing)?\s+in\b"),
    (Movement.ZOOM_OUT, r"zoom(?:s|ed|ing)?\s+out"),
    (Movement.SHAKE, r"camera\s+shak\w*|shak(?:y|ing)\s+camera|handheld\s+shake"),
    (Movement.TRACKING_SHOT, r"tracking\s+shot"),
    (Movement.STATIC_SHOT, r"static\s+(?:shot|camera)"),
)
_PLAIN = re.compile(
    "|".join(f"(?P<m{i}>\\b(?:{pattern}))" for i, (_, pattern) in enumerate(_PLAIN_WORDS)),
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CameraScript:
    """The shots of a prompt in order (each a set of simultaneous movements), and its text
    with the camera brackets taken out."""

    shots: tuple[tuple[Movement, ...], ...]
    text: str


def parse_camera(prompt: str) -> CameraScript:
    """Read the camera commands of ``prompt``.

    A bracket is a camera command when at least one entry names a movement or uses a word
    of ``CAMERA_WORDS`` (``[Pan sideways]``, ``[Left pan]``); then every entry must name a
    movement and there may be at most three. Other brackets are plain text.
    Raises ``InvalidRequest`` on field ``prompt`` naming the bad entry.
    """
    shots: list[tuple[Movement, ...]] = []
    kept: list[str] = []
    last = 0
    for match in _BRACKET.finditer(prompt):
        if not _is_command(match):
            continue
        entries = [e.strip() for e in match.group(1).split(",") if e.strip()]
        shots.append(_bracket_movements(entries, match.group(0)))
        kept.append(prompt[last : match.start()])
        last = match.end()
    kept.append(prompt[last:])
    text = " ".join("".join(kept).split())
    if not shots:
        shots = [(movement,) for movement in _plain_movements(prompt)]
    return CameraScript(shots=tuple(shots), text=text)


def camera_commands(prompt: str) -> tuple[str, ...]:
    """The brackets of ``prompt`` that ``parse_camera`` reads as camera commands, as written
    (``"[Pan left, Zoom in]"``), in order; never raises, whatever the brackets say."""
    return tuple(match.group(0) for match in _BRACKET.finditer(prompt) if _is_command(match))


def without_camera_commands(prompt: str) -> str:
    """``prompt`` with its camera commands taken out and its whitespace collapsed."""
    return " ".join(_BRACKET.sub(lambda m: " " if _is_command(m) else m.group(0), prompt).split())


def _is_command(bracket: re.Match[str]) -> bool:
    return any(_is_camera_like(entry.strip()) for entry in bracket.group(1).split(","))


def _is_camera_like(entry: str) -> bool:
    return entry.lower() in _BY_NAME or not CAMERA_WORDS.isdisjoint(_words(entry))


def _words(entry: str) -> list[str]:
    return re.findall(r"[a-z]+", entry.lower())


def _bracket_movements(entries: list[str], bracket: str) -> tuple[Movement, ...]:
    unknown = [e for e in entries if e.lower() not in _BY_NAME]
    if unknown:
        known = ", ".join(m.value for m in Movement)
        meant = _BY_WORDS.get(frozenset(_words(unknown[0])))
        hint = f"did you mean {meant.value!r}? " if meant is not None else ""
        raise InvalidRequest(
            "prompt",
            f"unknown camera movement {unknown[0]!r} in {bracket}; {hint}known: {known}",
        )
    if len(entries) > MAX_MOVEMENTS_PER_BRACKET:
        raise InvalidRequest(
            "prompt",
            f"{bracket} has {len(entries)} camera movements; at most "
            f"{MAX_MOVEMENTS_PER_BRACKET} may be combined in one bracket",
        )
    return tuple(_BY_NAME[e.lower()] for e in entries)


def _plain_movements(prompt: str) -> list[Movement]:
    found: list[Movement] = []
    for match in _PLAIN.finditer(prompt):
        index = int(next(name for name, value in match.groupdict().items() if value)[1:])
        found.append(_PLAIN_WORDS[index][0])
    return found


@dataclass(frozen=True)
class CameraPath:
    """Per-frame poses: ``zoom`` (>0, 1 = the whole picture) and centre offsets ``u``, ``v``."""

    zoom: FloatArray
    u: FloatArray
    v: FloatArray

    def inverse_affine(self, index: int, width: int, height: int) -> FloatArray:
        """The 2x3 matrix mapping output pixels of frame ``index`` to source pixels."""
        z = float(self.zoom[index])
        cx = width / 2 + float(self.u[index]) * width
        cy = height / 2 + float(self.v[index]) * height
        return np.array([[1 / z, 0.0, cx - width / (2 * z)], [0.0, 1 / z, cy - height / (2 * z)]])

    def reach(self, width: int, height: int) -> int:
        """How far past the picture's edges the camera ever looks, in whole pixels with a
        margin for interpolation (0 when every frame stays inside the picture)."""
        beyond = 0.0
        for size, offset in ((width, self.u), (height, self.v)):
            centre, half = size / 2 + offset * size, size / (2 * self.zoom)
            beyond = max(beyond, float(np.max(half - centre)), float(np.max(centre + half - size)))
        return 0 if beyond <= 0.5 else math.ceil(beyond) + 2

    def steady_view(self, width: int, height: int) -> tuple[float, float, float, float] | None:
        """The part of a ``width`` x ``height`` picture that every frame shows, as (left, top,
        right, bottom) in picture pixels; None when no part is in view throughout (opposite
        moves in turn, with zooms)."""
        edges = []
        for size, offset in ((width, self.u), (height, self.v)):
            centre, half = size / 2 + offset * size, size / (2 * self.zoom)
            edges.append(
                (max(0.0, float(np.max(centre - half))), min(size, float(np.min(centre + half))))
            )
        (left, right), (top, bottom) = edges
        if left >= right or top >= bottom:
            return None
        return left, top, right, bottom

    def is_still(self, index: int) -> bool:
        return bool(self.zoom[index] == 1.0 and self.u[index] == 0.0 and self.v[index] == 0.0)


def plan_path(
    script: CameraScript,
    frame_count: int,
    fps: int,
    *,
    seed: int,
    pinned_start: bool,
    pinned_end: bool,
) -> CameraPath:
    """The camera path over ``frame_count`` frames.

    ``pinned_start``: frame 0 shows the whole picture (a given first frame); otherwise the
    path is lifted so the camera never looks outside the picture. ``pinned_end``: the camera
    comes home to the whole picture by the last frame (a given last frame). Offsets are
    backed by extra zoom that keeps the viewport inside the picture (an outward move
    from a pinned first frame looks past its edges: see ``media.surround``).
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, frame_count)
    shots = script.shots or ((),)
    a, u, v = np.zeros(frame_count), np.zeros(frame_count), np.zeros(frame_count)
    for index, shot in enumerate(shots):
        progress = _ease(np.clip(t * len(shots) - index, 0.0, 1.0))
        da, du, dv = _shot_delta(shot, rng)
        a, u, v = a + da * progress, u + du * progress, v + dv * progress
        if Movement.SHAKE in shot:
            jitter_u, jitter_v = _shake(t * len(shots) - index, frame_count / fps, rng)
            u, v = u + jitter_u, v + jitter_v
    if not script.shots:
        a = a + _DEFAULT_PUSH * _ease(t)
    if pinned_end:
        home = 1.0 - _ease(np.clip((t - 0.6) / 0.4, 0.0, 1.0))
        a, u, v = a * home, u * home, v * home
    u, v = np.clip(u, -_MAX_OFFSET, _MAX_OFFSET), np.clip(v, -_MAX_OFFSET, _MAX_OFFSET)
    if not pinned_start and a.min() < 0:
        a = a - a.min()
    headroom = -np.log(1.0 - 2.0 * np.maximum(np.abs(u), np.abs(v)))
    return CameraPath(zoom=np.exp(a + headroom), u=u, v=v)


def _shot_delta(shot: tuple[Movement, ...], rng: np.random.Generator) -> tuple[float, float, float]:
    da = sum(_DELTAS[m][0] for m in shot)
    du = sum(_DELTAS[m][1] for m in shot)
    dv = sum(_DELTAS[m][2] for m in shot)
    if Movement.TRACKING_SHOT in shot and rng.random() < 0.5:
        du -= 2 * _DELTAS[Movement.TRACKING_SHOT][1]  # the subject walks the other way
    return da, du, dv


def _shake(
    local: FloatArray, seconds: float, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """A smooth seeded jitter, faded in and out within its shot (``local`` in 0..1)."""
    inside = (local >= 0) & (local <= 1)
    envelope = np.where(inside, np.sin(np.pi * np.clip(local, 0, 1)) ** 2, 0.0)
    time_s = local * seconds
    offsets = []
    for _ in range(2):
        hz = rng.uniform(0.7, 2.5, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        wave = sum(np.sin(2 * np.pi * f * time_s + p) for f, p in zip(hz, phase, strict=True))
        offsets.append(_SHAKE_AMPLITUDE * envelope * wave / 3)
    return offsets[0], offsets[1]


def _ease(x: FloatArray) -> FloatArray:
    """Smoothstep: zero velocity at both ends."""
    return x * x * (3 - 2 * x)
