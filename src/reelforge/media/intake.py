"""Image intake: decode image bytes and check them against the contract before any work.

Nothing is corrected silently: an image that breaks a rule is refused with a message that
names the field and the value. EXIF orientation is applied (it is how the image is meant
to be seen), and the checks run on the oriented image.

Every decode is sized before it starts, from what the file's structure declares
(``media.layout``): no image costs more than ``MAX_DECODE_BYTES`` of pixel and coefficient
buffers or more than ``MAX_SCAN_BLOCKS`` of JPEG scan work, whatever its header claims. The
pixels are decoded no larger than the largest output can use: a JPEG at 1/2, 1/4 or 1/8
scale (libjpeg's own scaled decode), a PNG reduced once decoded. ``source_size`` keeps the
file's own (oriented) size, from which the video's size is computed.
"""

from __future__ import annotations

import functools
import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageFile, UnidentifiedImageError

from reelforge.contract import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_RATIO,
    MIN_IMAGE_RATIO,
    MIN_IMAGE_SHORT_SIDE,
)
from reelforge.errors import InvalidImage
from reelforge.media.layout import BLOCK_COEFFICIENT_BYTES, JpegLayout, read_jpeg, read_png

ACCEPTED_FORMATS = ("JPEG", "PNG")
DECODE_SHORT_SIDE: Final = 2700
"""Pixels are kept with a shorter side of at least this (the largest output side) where the
file has them: any output, even cover-cropped, is made without enlarging."""
MAX_DECODE_BYTES: Final = 128 * 1024 * 1024
"""Most bytes of pixel and coefficient buffers one decode may hold at once."""
MAX_SCAN_BLOCKS: Final = 15_000_000
"""Most 8x8 blocks a JPEG's scans may visit, summed over scans (about half a second of work)."""
MAX_JPEG_SCANS: Final = 100
MAX_JPEG_SEGMENTS: Final = 2000
MAX_PNG_CHUNKS: Final = 20_000
DECODES_AT_ONCE: Final = 2
"""Decodes one process runs at once, on its own threads (the API's request threads, a
worker's jobs hand them over): images sent together hold at most this many decode budgets,
and only these threads' malloc arenas keep what the decodes freed (each thread that decoded
would keep up to a decode's peak)."""
SOURCE_SIZE: Final = "reelforge.source_size"
"""``Image.info`` key of the (width, height) the file itself has, EXIF orientation applied."""
_BYTES_PER_PIXEL: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
"""Pillow's bytes per pixel where not 4 (RGB is kept in 4)."""
_REDUCIBLE: Final = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK"})
_TURNS: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation → the transposition that shows the image upright."""


def load_image(data: bytes, *, field: str) -> Image.Image:
    """Decode ``data`` as a JPG/PNG image and check the contract's rules and the decode limits.

    Returns an RGB image with EXIF orientation applied, its shorter side reduced to no less
    than ``DECODE_SHORT_SIDE`` px (a smaller one is kept as it is); ``source_size`` gives the
    file's own size. Raises ``InvalidImage`` naming ``field`` for any broken rule and for
    any failure to decode, whatever the decoder raised.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImage(
            field, f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes (20 MB)"
        )
    return _decoders(os.getpid()).submit(_decode, data, field).result()


@functools.cache
def _decoders(pid: int) -> ThreadPoolExecutor:
    """The decode threads of process ``pid`` (a forked child makes its own)."""
    return ThreadPoolExecutor(DECODES_AT_ONCE, thread_name_prefix=f"intake-{pid}")


def source_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) in pixels of the file ``image`` was decoded from by ``load_image``,
    EXIF orientation applied; ``image.size`` for any other image."""
    size = image.info.get(SOURCE_SIZE)
    return size if isinstance(size, tuple) else image.size


@dataclass(frozen=True)
class _Structure:
    """What a file's structure says its decode needs beyond its pixels."""

    coefficients: int = 0
    """Bytes of a JPEG's whole-image coefficient buffer (0 where none is needed)."""
    late_orientation: bool = False
    """A PNG's orientation may be in chunks Pillow reads only once the pixels are decoded."""


def _decode(data: bytes, field: str) -> Image.Image:
    structure = _check_structure(data, field)
    try:
        # Pillow only warns between its pixel limit and twice that (no warnings filter is
        # changed here: filters are process-wide, and decodes run on several threads).
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as opened:
            _check_pixels(opened.size)
            stored = opened.size
            header = _orientation(opened) if opened.format == "JPEG" else 1
            _check_geometry(_oriented(stored, header), field)  # from the header: no decode
            turned = header != 1 or structure.late_orientation
            _prepare(opened, structure.coefficients, turned, field)
            image = _pixels(opened)
            orientation = _orientation(opened)  # now with any chunk after a PNG's pixels
            if orientation in _TURNS:
                image = image.transpose(_TURNS[orientation])
            image.info[SOURCE_SIZE] = _oriented(stored, orientation)
            return image
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(field, f"image has too many pixels to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(field, "image is not a JPG/JPEG or PNG file") from exc
    except Exception as exc:  # whatever a decoder raises on bad bytes is the image's fault
        raise InvalidImage(field, f"image could not be decoded ({exc})") from exc


def _check_pixels(size: tuple[int, int]) -> None:
    """Pillow's decompression-bomb limit, which it only warns of below twice its value."""
    if Image.MAX_IMAGE_PIXELS is not None and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{size[0]}x{size[1]} is more than {Image.MAX_IMAGE_PIXELS} pixels"
        )


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright). A PNG's ``getexif`` decodes the pixels first (an
    eXIf chunk may follow them): only call it on one without metadata or once decoded."""
    orientation = image.getexif().get(0x0112, 1)
    return orientation if isinstance(orientation, int) else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``size`` as shown once ``orientation`` is applied."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _check_geometry(size: tuple[int, int], field: str) -> None:
    width, height = size
    if min(width, height) <= MIN_IMAGE_SHORT_SIDE:
        raise InvalidImage(
            field,
            f"image is {width}x{height}; its shorter side must be greater than "
            f"{MIN_IMAGE_SHORT_SIDE} px",
        )
    ratio = width / height
    if not MIN_IMAGE_RATIO < ratio < MAX_IMAGE_RATIO:
        raise InvalidImage(
            field,
            f"image is {width}x{height} (width/height {ratio:.3f}); the ratio must be "
            "strictly between 2:5 and 5:2",
        )


def _check_structure(data: bytes, field: str) -> _Structure:
    """Refuse a JPEG or PNG whose structure is beyond the limits, before Pillow walks it (in
    Python, a segment or chunk at a time); what the structure says the decode needs."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        png = read_png(data, MAX_PNG_CHUNKS)
        if png.chunks > MAX_PNG_CHUNKS:
            raise InvalidImage(field, f"PNG has more than {MAX_PNG_CHUNKS} chunks")
        return _Structure(late_orientation=png.metadata)
    if not data.startswith(b"\xff\xd8\xff"):
        return _Structure()
    jpeg = read_jpeg(data, MAX_JPEG_SEGMENTS)
    _check_jpeg(jpeg, field)
    if jpeg.buffers_coefficients:
        return _Structure(coefficients=jpeg.total_blocks * BLOCK_COEFFICIENT_BYTES)
    return _Structure()


def _prepare(opened: ImageFile.ImageFile, coefficients: int, turned: bool, field: str) -> None:
    """Refuse a decode that needs more than ``MAX_DECODE_BYTES``; set a JPEG's decode scale:
    the least reduction that keeps the shorter side at least ``DECODE_SHORT_SIDE``, or more
    where the budget needs it."""
    scale = 1
    if opened.format == "JPEG":
        while scale < 8 and min(opened.size) // (2 * scale) >= DECODE_SHORT_SIDE:
            scale *= 2
        while scale < 8 and coefficients + _held(opened, scale, turned) > MAX_DECODE_BYTES:
            scale *= 2
    held = coefficients + _held(opened, scale, turned)
    if held > MAX_DECODE_BYTES:
        mib = 1024 * 1024
        width, height = opened.size
        raise InvalidImage(
            field,
            f"image of {width}x{height} needs {math.ceil(held / mib)} MiB to decode; "
            f"the limit is {MAX_DECODE_BYTES // mib} MiB",
        )
    if scale > 1:
        opened.draft(opened.mode, (opened.size[0] // scale, opened.size[1] // scale))


def _check_jpeg(layout: JpegLayout, field: str) -> None:
    """The structure's limits: segments, scans, data enough for the pixels, scan work."""
    if layout.scans > MAX_JPEG_SCANS:
        raise InvalidImage(field, f"JPEG has more than {MAX_JPEG_SCANS} scans")
    if layout.segments > MAX_JPEG_SEGMENTS:
        raise InvalidImage(field, f"JPEG has more than {MAX_JPEG_SEGMENTS} marker segments")
    blocks = layout.total_blocks
    if not layout.arithmetic and layout.entropy_bytes * 8 < blocks:
        raise InvalidImage(
            field,
            f"JPEG has {layout.entropy_bytes} bytes of image data, fewer than the "
            f"{math.ceil(blocks / 8)} its {layout.width}x{layout.height} pixels need: "
            "the file is truncated or damaged",
        )
    if layout.scan_blocks > MAX_SCAN_BLOCKS:
        raise InvalidImage(
            field,
            f"JPEG scans visit {layout.scan_blocks} blocks of 8x8 pixels; at most "
            f"{MAX_SCAN_BLOCKS}",
        )


def _held(opened: ImageFile.ImageFile, scale: int, turned: bool) -> int:
    """Bytes of the pixel buffers ``_pixels`` and the turn hold at most, all counted as if
    held at once: the decoded image at 1/``scale``, its reducible working copy, the
    reduced RGB copy and its transposed copy."""
    width, height = (math.ceil(side / scale) for side in opened.size)
    decoded = width * height
    held = decoded * _BYTES_PER_PIXEL.get(opened.mode, 4)
    work = _working_mode(opened)
    if work != opened.mode:
        held += decoded * _BYTES_PER_PIXEL.get(work, 4)
    reduced = decoded // max(1, min(width, height) // DECODE_SHORT_SIDE) ** 2
    if work != "RGB":
        held += reduced * 4
    return held + (reduced * 4 if turned else 0)


def _working_mode(image: Image.Image) -> str:
    """The mode ``image`` is reduced in: its own where Pillow can reduce it."""
    if image.mode in _REDUCIBLE:
        return image.mode
    if image.mode == "1":
        return "L"
    if image.mode.startswith("I;16"):
        return "I"
    return "RGBA" if "transparency" in image.info or "A" in image.mode else "RGB"


def _pixels(opened: ImageFile.ImageFile) -> Image.Image:
    """The decoded pixels in RGB, reduced by a whole factor to a shorter side of at least
    ``DECODE_SHORT_SIDE`` (a JPEG's scale is already set)."""
    opened.load()
    image: Image.Image = opened
    work = _working_mode(image)
    if work != image.mode:
        image = image.convert(work)
    factor = min(image.size) // DECODE_SHORT_SIDE
    if factor >= 2:
        image = image.reduce(factor)
    return image if image.mode == "RGB" else image.convert("RGB")
