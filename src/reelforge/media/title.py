"""The designed first frame of a text-only request: a gradient chosen by the prompt's hash
with the prompt set in the fonts that ship with reelforge (``media.lettering``), inside the
part of the picture the camera keeps in view."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import Image, ImageFilter

from reelforge.media.lettering import LINE_SPACING, Lettering, settable
from reelforge.video import Frame

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in pixels."""

_TEXT_WIDTH = 0.66
"""Share of the frame's width the text may use; the rest stays clear for camera moves."""
_MAX_LINES = 6
_MIN_SIZE = 6
"""Smallest font size, in pixels, before lines are cut short."""
INK = (250, 248, 240)
_SHADE = 200 / 255
"""How dark the shadow is at its densest (0..1)."""


def title_card(text: str, width: int, height: int, area: Box | None = None) -> Frame:
    """An RGB frame of ``width`` x ``height`` px showing ``text`` over its own gradient, the
    text with its shadow wholly inside ``area`` (default: the whole card).

    The same text and area always give the same picture.
    """
    return Lettered(text, width, height, area).over(gradient(text, width, height))


def gradient(text: str, width: int, height: int) -> Frame:
    """The title card's background for ``text``: a gradient chosen by the text's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return np.asarray(_gradient(digest, width, height))


class Lettered:
    """``text`` set for a ``width`` x ``height`` frame, inside ``area`` (default: the whole
    frame), as a layer to put over a picture of that size."""

    def __init__(self, text: str, width: int, height: int, area: Box | None = None) -> None:
        ink, size = _ink(text, width, height, area or (0.0, 0.0, width, height))
        shadow = Image.new("L", ink.size, 0)
        shadow.paste(ink, (round(size / 12), round(size / 12)))
        shadow = shadow.filter(ImageFilter.GaussianBlur(size / 8))
        sx0, sy0, sx1, sy1 = shadow.getbbox() or (0, 0, 1, 1)
        ix0, iy0, ix1, iy1 = ink.getbbox() or (sx0, sy0, sx1, sy1)
        self._box = (min(sx0, ix0), min(sy0, iy0), max(sx1, ix1), max(sy1, iy1))
        self._ink = np.asarray(ink.crop(self._box), np.float32)[..., None] / 255
        self._shade = 1 - np.asarray(shadow.crop(self._box), np.float32)[..., None] / 255 * _SHADE

    def over(self, picture: Frame) -> Frame:
        """A copy of ``picture`` with the text's shadow and ink on it."""
        x0, y0, x1, y1 = self._box
        out = picture.copy()
        region = out[y0:y1, x0:x1].astype(np.float32) * self._shade
        region += (np.array(INK, np.float32) - region) * self._ink
        out[y0:y1, x0:x1] = np.rint(region).astype(np.uint8)
        return out


def _gradient(digest: bytes, width: int, height: int) -> Image.Image:
    hue = digest[0] / 255
    spread = 0.08 + digest[1] / 255 * 0.22
    angle = digest[2] / 255 * np.pi
    start = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.55))
    end = np.array(colorsys.hsv_to_rgb((hue + spread) % 1.0, 0.85, 0.25))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs, ys = xs / width - 0.5, ys / height - 0.5
    along = (xs * np.cos(angle) + ys * np.sin(angle)) / 0.71 + 0.5
    mix = np.clip(along, 0, 1)[..., None]
    vignette = (1.0 - 0.35 * (xs**2 + ys**2))[..., None]
    rgb = ((start * (1 - mix) + end * mix) * vignette * 255).clip(0, 255)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _ink(text: str, width: int, height: int, area: Box) -> tuple[Image.Image, int]:
    """The text's ink as an ``L`` image of the card's size, centred in ``area`` with a margin
    of half the font size (room for the shadow), and the font size used. The size starts at
    1/14 of the card's height and shrinks while the area cannot hold a line, or (down to half
    that size) the lines; lines beyond what fits end in an ellipsis."""
    left, top, right, bottom = area
    text = settable(text)
    size = max(_MIN_SIZE, height // 14)
    while True:
        lettering = Lettering(size)
        room_w = min(right - left, width * _TEXT_WIDTH) - size
        room_h = bottom - top - size
        fitting = max(1, min(_MAX_LINES, int((room_h - size * 1.1) // (size * LINE_SPACING)) + 1))
        lines = lettering.wrap(text, max(room_w, size), limit=fitting + 1)
        overflow = len(lines) > fitting and size > height // 28
        cramped = room_h < size * LINE_SPACING or _widest(lettering, lines) > room_w
        if not (overflow or cramped) or size <= _MIN_SIZE:
            break
        size = max(_MIN_SIZE, int(size * 0.85))
    if len(lines) > fitting:
        lines = [*lines[: fitting - 1], _ellipsis(lettering, lines[fitting - 1], room_w)]
    return _placed(lettering, lines, width, height, area), size


def _widest(lettering: Lettering, lines: list[str]) -> float:
    return max(lettering.width(line) for line in lines)


def _ellipsis(lettering: Lettering, line: str, room: float) -> str:
    """``line`` cut short to end in " …" within ``room`` pixels."""
    while line and lettering.width(line + " …") > room:
        line = line[:-1]
    return line.rstrip(" .,;") + " …"


def _placed(
    lettering: Lettering, lines: list[str], width: int, height: int, area: Box
) -> Image.Image:
    """The lines' ink centred (by its bounding box) on ``area``'s centre."""
    scratch = Image.new("L", (width * 2, height * 2), 0)
    lettering.draw(scratch, lines, width, height / 2)
    bbox = scratch.getbbox()
    ink = Image.new("L", (width, height), 0)
    if bbox is None:
        return ink
    centre_x, centre_y = (area[0] + area[2]) / 2, (area[1] + area[3]) / 2
    x = round(centre_x - (bbox[2] - bbox[0]) / 2)
    y = round(centre_y - (bbox[3] - bbox[1]) / 2)
    ink.paste(scratch.crop(bbox), (x, y))
    return ink
