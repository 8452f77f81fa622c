"""Image intake: decode image bytes and check them against the contract before any work.

Nothing is corrected silently: an image that breaks a rule is refused with a message that
names the field and the value. EXIF orientation is applied (it is how the image is meant
to be seen), and the checks run on the oriented image.

Every decode is sized before it starts, from what the file's structure declares
(``media.layout``): no image costs more than ``MAX_DECODE_BYTES`` of pixel and coefficient
buffers or more than ``MAX_SCAN_BLOCKS`` of JPEG scan work, whatever its header claims. The
pixels are kept no larger than the largest output can use: a JPEG decoded at 1/2, 1/4 or 1/8
scale (libjpeg's own scaled decode), a PNG resized once decoded. Decodes run one
at a time per process. ``source_size`` keeps the file's own (oriented) size, from which the
video's size is computed.
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
file has them and the budget allows: any output, even cover-cropped, is made without
enlarging."""
MAX_DECODE_BYTES: Final = 128 * 1024 * 1024
"""Most bytes of pixel and coefficient buffers one decode may hold at once."""
MAX_SCAN_BLOCKS: Final = 15_000_000
"""Most 8x8 blocks a JPEG's scans may visit, summed over scans (about half a second of work)."""
MAX_JPEG_SCANS: Final = 100
MAX_JPEG_SEGMENTS: Final = 2000
MAX_PNG_CHUNKS: Final = 20_000
DECODES_AT_ONCE: Final = 1
"""Decodes one process runs at once, on the intake's own thread (the API's request threads
and a worker's jobs hand them over): images sent together hold one decode budget and the
images already handed back, and only this thread's malloc arena keeps what decodes freed
(every thread that decoded would keep up to a decode's peak)."""
SOURCE_SIZE: Final = "reelforge.source_size"
"""``Image.info`` key of the (width, height) the file itself has, EXIF orientation applied."""
_BYTES_PER_PIXEL: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
"""Pillow's bytes per pixel where not 4 (RGB is kept in 4)."""
_RESIZABLE: Final = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK"})
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

    Returns an RGB image with EXIF orientation applied, made smaller where the file's shorter
    side is over ``DECODE_SHORT_SIDE`` px (to no less than that where the budget allows);
    ``source_size`` gives the file's own size. Decoded on the process's intake thread, one
    image at a time. Raises ``InvalidImage`` naming ``field`` for any broken rule and for any
    failure to decode, whatever the decoder raised.
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
        # Pillow only warns between its pixel limit and twice that; no warnings filter is
        # changed here (filters are process-wide, and other threads run beside this one).
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
        while scale < 8 and _held(opened, scale, turned, coefficients) > MAX_DECODE_BYTES:
            scale *= 2
    held = _held(opened, scale, turned, coefficients)
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


def _held(opened: ImageFile.ImageFile, scale: int, turned: bool, coefficients: int) -> int:
    """Most bytes of buffers ``_pixels`` and the turn hold at once, the file's decoded image
    (at 1/``scale``) held throughout: beside it, the decoder's ``coefficients``; then its
    working copy; then the resize's intermediate and its result; then the result's RGB copy;
    then the turned copy."""
    width, height = (math.ceil(side / scale) for side in opened.size)
    work = _working_mode(opened)
    decoded = width * height * _BYTES_PER_PIXEL.get(opened.mode, 4)
    work_bytes = _BYTES_PER_PIXEL.get(work, 4)
    copy = width * height * work_bytes if work != opened.mode else 0
    kept_width, kept_height = _kept_size(opened, (width, height))
    kept = kept_width * kept_height * work_bytes
    if (kept_width, kept_height) == (width, height):
        kept = 0  # no resize: the working copy is kept
    between = max(kept_width * height, width * kept_height) * work_bytes if kept else 0
    rgb = kept_width * kept_height * 4
    converted = rgb if work != "RGB" else 0
    separate = rgb if converted or kept or copy else 0  # the result is not the decoded image
    phases = (copy, copy + between + kept, (kept or copy) + converted)
    return decoded + max(coefficients, *phases, separate + (rgb if turned else 0))


def _kept_size(opened: ImageFile.ImageFile, size: tuple[int, int]) -> tuple[int, int]:
    """The size a decode of ``size`` is kept at: a PNG's scaled to a shorter side of
    ``DECODE_SHORT_SIDE`` where it is longer; a JPEG's as decoded (its scale already keeps
    it under twice that)."""
    short = min(size)
    if opened.format != "PNG" or short <= DECODE_SHORT_SIDE:
        return size
    width, height = (
        max(DECODE_SHORT_SIDE, round(side * DECODE_SHORT_SIDE / short)) for side in size
    )
    return width, height


def _working_mode(image: Image.Image) -> str:
    """The mode ``image`` is resized in: its own where Pillow can resize it smoothly."""
    if image.mode in _RESIZABLE:
        return image.mode
    if image.mode == "1":
        return "L"
    if image.mode.startswith("I;16"):
        return "I"
    return "RGBA" if "transparency" in image.info or "A" in image.mode else "RGB"


def _pixels(opened: ImageFile.ImageFile) -> Image.Image:
    """The decoded pixels in RGB, at ``_kept_size`` (a JPEG's decode scale is already set)."""
    opened.load()
    image: Image.Image = opened
    work = _working_mode(image)
    if work != image.mode:
        image = image.convert(work)
    kept = _kept_size(opened, image.size)
    if kept != image.size:
        image = image.resize(kept, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image if image.mode == "RGB" else image.convert("RGB")
