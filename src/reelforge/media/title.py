"""The designed first frame of a text-only request: a gradient chosen by the prompt's hash
with the prompt set in a readable font (the FreeType font that ships with Pillow)."""

from __future__ import annotations

import colorsys
import hashlib
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

_TEXT_WIDTH = 0.66
"""Share of the frame's width the text may use; the rest stays clear for camera moves."""
_MAX_LINES = 6


def title_card(text: str, width: int, height: int) -> Image.Image:
    """An RGB image of ``width`` x ``height`` px showing ``text`` over its own gradient.

    The same text always gives the same picture.
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    card = _gradient(digest, width, height)
    _set_text(card, text, height)
    return card


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


def _set_text(card: Image.Image, text: str, height: int) -> None:
    size = max(12, height // 14)
    font = ImageFont.load_default(size=size)
    chars_per_line = max(8, int(card.width * _TEXT_WIDTH / (size * 0.55)))
    lines = textwrap.wrap(text, width=chars_per_line) or [""]
    if len(lines) > _MAX_LINES:
        lines = [*lines[: _MAX_LINES - 1], lines[_MAX_LINES - 1].rstrip(" .,;") + " …"]
    body = "\n".join(lines)
    draw = ImageDraw.Draw(card)
    box = draw.multiline_textbbox((0, 0), body, font=font, spacing=size // 3, align="center")
    left = (card.width - (box[2] - box[0])) / 2 - box[0]
    top = (card.height - (box[3] - box[1])) / 2 - box[1]
    shadow = Image.new("L", card.size, 0)
    ImageDraw.Draw(shadow).multiline_text(
        (left + size / 12, top + size / 12),
        body,
        font=font,
        fill=200,
        spacing=size // 3,
        align="center",
    )
    card.paste((0, 0, 0), mask=shadow.filter(ImageFilter.GaussianBlur(size / 8)))
    draw.multiline_text(
        (left, top), body, font=font, fill=(250, 248, 240), spacing=size // 3, align="center"
    )
