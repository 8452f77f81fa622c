"""What an image file's bytes declare, read without decoding any pixel.

A JPEG's frame (size, components, sampling, coding) and its scans; a PNG's chunks. The
intake sizes a decode from these before it starts one. The walks are linear in the file
and bounded in steps: they stop counting past a limit the caller gives, and leave every
judgement of damaged structure to the decoder.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Final

_MARKER: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""A JPEG marker: 0xFF then a code that is not a stuffed zero, a restart or a fill byte
(without ``+``: a run of fill bytes must not make the search quadratic)."""
_NO_LENGTH: Final = frozenset({0x01, 0xD8, 0xD9})
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame codes (0xC4, 0xC8 and 0xCC are DHT, JPG and DAC)."""
_ARITHMETIC: Final = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS, _EOI = 0xDA, 0xD9
BLOCK_COEFFICIENT_BYTES: Final = 64 * 2
"""What a decoder that buffers a whole image's coefficients keeps per 8x8 block."""


@dataclass(frozen=True)
class Component:
    """One colour component of a JPEG frame and its sampling factors."""

    ident: int
    horizontal: int
    vertical: int


@dataclass
class JpegLayout:
    """A JPEG's structure: its frame, and what its scans will ask of a decoder.

    ``segments`` counts markers (restarts excluded, EOI ends the walk) up to
    ``max_segments + 1``, where the walk stops: above the limit the other counts are partial.
    """

    width: int = 0
    height: int = 0
    components: dict[int, Component] = field(default_factory=dict)
    arithmetic: bool = False
    progressive: bool = False
    segments: int = 0
    scans: int = 0
    scan_blocks: int = 0
    """8x8 blocks the scans visit, summed over scans (a decoder's work grows with it)."""
    entropy_bytes: int = 0
    """Bytes of entropy-coded data after the scans' headers."""

    def blocks(self, ident: int) -> int:
        """8x8 blocks of component ``ident`` over the whole frame (0 for an unknown one)."""
        component = self.components.get(ident)
        if component is None:
            return 0
        most_h = max(c.horizontal for c in self.components.values())
        most_v = max(c.vertical for c in self.components.values())
        columns = math.ceil(math.ceil(self.width * component.horizontal / most_h) / 8)
        rows = math.ceil(math.ceil(self.height * component.vertical / most_v) / 8)
        return columns * rows

    @property
    def total_blocks(self) -> int:
        return sum(self.blocks(ident) for ident in self.components)

    @property
    def buffers_coefficients(self) -> bool:
        """A progressive or multi-scan JPEG is decoded from a whole-image coefficient buffer
        (``total_blocks * BLOCK_COEFFICIENT_BYTES``) however small its output."""
        return self.progressive or self.scans > 1


def read_jpeg(data: bytes, max_segments: int) -> JpegLayout:
    """The layout of the JPEG ``data`` (``data`` starts with SOI); damaged structure ends the
    walk early and is left for the decoder to refuse."""
    layout = JpegLayout()
    found = _MARKER.search(data, 2)
    while found is not None and layout.segments <= max_segments:
        code, body = data[found.start() + 1], found.end()
        if code == _EOI:
            break
        layout.segments += 1
        if code in _NO_LENGTH:
            found = _MARKER.search(data, body)
            continue
        if body + 2 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, body)
        segment = data[body + 2 : body + length]
        if code in _SOF and not layout.components:
            _read_frame(layout, code, segment)
        after = body + length
        found = _MARKER.search(data, after)
        if code == _SOS:
            _read_scan(layout, segment)
            layout.entropy_bytes += max(0, (found.start() if found else len(data)) - after)
    return layout


def _read_frame(layout: JpegLayout, code: int, segment: bytes) -> None:
    if len(segment) < 6:
        return
    _, layout.height, layout.width, count = struct.unpack_from(">BHHB", segment)
    for index in range(min(count, (len(segment) - 6) // 3)):
        ident, sampling = segment[6 + 3 * index], segment[7 + 3 * index]
        horizontal, vertical = max(1, sampling >> 4), max(1, sampling & 0x0F)
        layout.components[ident] = Component(ident, horizontal, vertical)
    layout.arithmetic = code in _ARITHMETIC
    layout.progressive = code in (0xC2, 0xCA)


def _read_scan(layout: JpegLayout, segment: bytes) -> None:
    layout.scans += 1
    count = segment[0] if segment else 0
    idents = {segment[1 + 2 * index] for index in range(min(count, (len(segment) - 1) // 2))}
    layout.scan_blocks += sum(layout.blocks(ident) for ident in idents)


_PNG_METADATA: Final = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})
"""Chunks that may carry an EXIF orientation (eXIf, XMP, ImageMagick's raw profile)."""


@dataclass(frozen=True)
class PngLayout:
    """A PNG's chunks: their count, up to the caller's limit + 1 (the walk stops there), and
    whether any may carry an orientation."""

    chunks: int
    metadata: bool


def read_png(data: bytes, max_chunks: int) -> PngLayout:
    """The layout of the PNG ``data`` (after its 8-byte signature); a chunk running past the
    end ends the walk."""
    count, position, metadata = 0, 8, False
    while position + 8 <= len(data) and count <= max_chunks:
        (length,) = struct.unpack_from(">I", data, position)
        metadata = metadata or data[position + 4 : position + 8] in _PNG_METADATA
        count += 1
        position += 12 + length
    return PngLayout(count, metadata)
