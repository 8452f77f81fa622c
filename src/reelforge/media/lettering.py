"""Text set in the fonts that ship with reelforge, falling back per character.

Two subsets of openly licensed fonts ship in ``media/fonts`` (licence: ``fonts/OFL.txt``;
``tools/subset_fonts.py`` made them): Noto Sans (Latin, Greek, Cyrillic) and Noto Sans CJK SC
(kana, everyday Chinese hanzi and Japanese kanji). Each character is set in the first font
whose character map holds it; one that no font holds (an emoji, a rare ideograph, a control
character) is left out, never drawn as an empty box. Nothing depends on the system's fonts.
"""

from __future__ import annotations

import functools
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_FILES = (
    Path(__file__).with_name("fonts") / "NotoSans-Subset.ttf",
    Path(__file__).with_name("fonts") / "NotoSansCJKsc-Subset.otf",
)
"""The shipped fonts, in fallback order."""

LINE_SPACING = 1.4
"""Baseline to baseline, in multiples of the font size."""


def character_map(path: Path) -> frozenset[int]:
    """The code points the font at ``path`` maps to a real glyph (not .notdef), read from its
    ``cmap`` table's Windows BMP subtable (format 4: the shipped fonts hold nothing beyond
    the Basic Multilingual Plane)."""
    data = path.read_bytes()
    (tables,) = struct.unpack_from(">H", data, 4)
    records = (struct.unpack_from(">4sIII", data, 12 + 16 * i) for i in range(tables))
    cmap = next(offset for tag, _, offset, _ in records if tag == b"cmap")
    (count,) = struct.unpack_from(">H", data, cmap + 2)
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        if (platform, encoding) == (3, 1):
            return _format4(data, cmap + offset)
    raise ValueError(f"{path.name} has no Windows BMP character map")


def _format4(data: bytes, at: int) -> frozenset[int]:
    (segments,) = struct.unpack_from(">H", data, at + 6)
    segments //= 2
    ends = struct.unpack_from(f">{segments}H", data, at + 14)
    starts_at = at + 16 + 2 * segments
    starts = struct.unpack_from(f">{segments}H", data, starts_at)
    deltas = struct.unpack_from(f">{segments}h", data, starts_at + 2 * segments)
    ranges_at = starts_at + 4 * segments
    ranges = struct.unpack_from(f">{segments}H", data, ranges_at)
    found: set[int] = set()
    for i, (first, last, delta, offset) in enumerate(
        zip(starts, ends, deltas, ranges, strict=True)
    ):
        for c in range(first, min(last, 0xFFFE) + 1):
            glyph = c
            if offset:
                (glyph,) = struct.unpack_from(
                    ">H", data, ranges_at + 2 * i + offset + 2 * (c - first)
                )
                glyph = (glyph + delta) & 0xFFFF if glyph else 0
            else:
                glyph = (c + delta) & 0xFFFF
            if glyph:
                found.add(c)
    return frozenset(found)


@functools.cache
def _coverage() -> tuple[frozenset[int], ...]:
    """Each shipped font's character map, read once per process."""
    return tuple(character_map(path) for path in FONT_FILES)


def settable(text: str) -> str:
    """``text`` without the characters no shipped font holds and without control and format
    characters (joiners, variation selectors), its whitespace collapsed to single spaces."""
    kept = (char for char in text if char.isspace() or _drawn(char))
    return " ".join("".join(kept).split())


def _drawn(char: str) -> bool:
    return unicodedata.category(char) not in ("Cc", "Cf") and _font_index(char) is not None


def _font_index(char: str) -> int | None:
    """The first shipped font that holds ``char``, or None."""
    return next((i for i, cmap in enumerate(_coverage()) if ord(char) in cmap), None)


@dataclass(frozen=True)
class Run:
    """Characters set in one font, one after another on a line."""

    text: str
    font: ImageFont.FreeTypeFont


class Lettering:
    """The shipped fonts at ``size`` pixels (the em), with per-character fallback."""

    def __init__(self, size: int) -> None:
        self.size = size
        # The basic layout everywhere: the same pixels whether or not libraqm is installed.
        basic = ImageFont.Layout.BASIC
        self._fonts = [ImageFont.truetype(str(p), size, layout_engine=basic) for p in FONT_FILES]

    def runs(self, text: str) -> list[Run]:
        """``text`` split into runs by the first font that holds each character; characters no
        font holds are dropped (whitespace of any kind becomes a plain space)."""
        runs: list[Run] = []
        for char in text:
            char = " " if char.isspace() else char
            index = _font_index(char) if char == " " or _drawn(char) else None
            if index is None:
                continue
            if runs and runs[-1].font is self._fonts[index]:
                runs[-1] = Run(runs[-1].text + char, runs[-1].font)
            else:
                runs.append(Run(char, self._fonts[index]))
        return runs

    def width(self, text: str) -> float:
        """The advance of ``text`` set on one line, in pixels."""
        return sum(run.font.getlength(run.text) for run in self.runs(text))

    def wrap(self, text: str, max_width: float, limit: int) -> list[str]:
        """``text`` broken into lines no wider than ``max_width`` pixels: between words, and
        between any two wide (CJK) characters; a word wider than a line is split. At most
        ``limit`` lines: the rest of a longer text is not set."""
        lines: list[str] = []
        line = ""
        for unit in _units(text):
            candidate = line + unit
            if not line.strip() or self.width(candidate.rstrip()) <= max_width:
                line = candidate
                continue
            lines.extend(self._split(line.strip(), max_width, limit))
            line = "" if unit.isspace() else unit
            if len(lines) >= limit:
                return lines[:limit]
        lines.extend(self._split(line.strip(), max_width, limit))
        return lines[:limit]

    def _split(self, line: str, max_width: float, limit: int) -> list[str]:
        """``line`` cut between characters into pieces no wider than ``max_width`` (at most
        ``limit`` of them)."""
        pieces = [""]
        for char in line:
            if pieces[-1] and self.width(pieces[-1] + char) > max_width:
                if len(pieces) == limit:
                    break
                pieces.append("")
            pieces[-1] += char
        return pieces

    def draw(self, mask: Image.Image, lines: list[str], centre_x: float, top: float) -> None:
        """Set ``lines`` on the ``L`` image ``mask`` (255 = ink), each centred on ``centre_x``,
        the first line's ascent starting at ``top``."""
        draw = ImageDraw.Draw(mask)
        baseline = top + self.size * 1.1
        for line in lines:
            x = centre_x - self.width(line) / 2
            for run in self.runs(line):
                draw.text((x, baseline), run.text, font=run.font, fill=255, anchor="ls")
                x += run.font.getlength(run.text)
            baseline += self.size * LINE_SPACING


def _units(text: str) -> list[str]:
    """Breakable pieces of ``text``: runs of spaces, words, and single wide characters."""
    units: list[str] = []
    for char in text:
        wide = unicodedata.east_asian_width(char) in ("W", "F")
        kind = "space" if char.isspace() else "wide" if wide else "word"
        if units and kind != "wide" and _kind(units[-1]) == kind:
            units[-1] += char
        else:
            units.append(char)
    return units


def _kind(unit: str) -> str:
    if unit.isspace():
        return "space"
    return "wide" if unicodedata.east_asian_width(unit[-1]) in ("W", "F") else "word"
