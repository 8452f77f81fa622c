"""Image files made in code for the intake's limits: attacks that once passed the checks, their
edges, and a real-sized photograph. Shared by tests/media and bench/images.py.

Each maker returns the file's bytes, built without ever holding the pixels it claims.
"""

from __future__ import annotations

import io
import re
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

MIB = 1024 * 1024


def encoded(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo(width: int = 8000, height: int = 6000, grain: int = 10, seed: int = 0) -> bytes:
    """A photograph-like JPEG (smooth colour with per-pixel grain, quality 95): at 8000x6000,
    the 48-megapixel phone photo of about 15 MB the contract must accept."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 64, width // 64, 3), dtype=np.uint8)
    pixels = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    tile = rng.integers(0, grain, (500, 500, 1), dtype=np.uint8)
    grains = np.tile(tile, (-(-height // 500), -(-width // 500), 3))[:height, :width]
    cv2.add(pixels, grains, dst=pixels)
    return encoded(Image.fromarray(pixels, "RGB"), "JPEG", quality=95)


def _set_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its frame header claiming ``width`` x ``height``."""
    frame = re.search(rb"\xff[\xc0\xc2]", data)
    assert frame is not None
    at = frame.start() + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


def claimed_jpeg(width: int = 9000, height: int = 9000) -> bytes:
    """A few-hundred-byte JPEG whose header claims ``width`` x ``height``: libjpeg fills in
    the missing data."""
    return _set_jpeg_size(
        encoded(Image.new("RGB", (16, 16), (90, 120, 150)), "JPEG"), width, height
    )


def truncated_jpeg(width: int = 9000, height: int = 9000, kept: float = 0.5) -> bytes:
    """A flat JPEG of ``width`` x ``height`` with only ``kept`` of its image data, then EOI."""
    data = encoded(Image.new("RGB", (width, height), (90, 120, 150)), "JPEG")
    return data[: round(len(data) * kept)] + b"\xff\xd9"


def scan_bomb(side: int = 2048, repeats: int = 13000) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times (~270 KB by default)."""
    data = encoded(Image.new("RGB", (side, side), (90, 120, 150)), "JPEG", progressive=True)
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + b"\xff\xd9"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png(width: int = 9400, height: int = 9400, bit_depth: int = 1, colour: int = 0) -> bytes:
    """An all-zero PNG (``colour``: 0 grey, 2 RGB), compressed a row at a time: ~11 KB for a
    1-bit 9400x9400."""
    channels = 3 if colour == 2 else 1
    row = bytes(1 + -(-width * bit_depth * channels // 8))
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def png_chunk_flood(count: int = 1_700_000) -> bytes:
    """A small PNG with ``count`` empty private chunks before its image data (~20 MB)."""
    data = encoded(Image.new("RGB", (400, 400), (90, 120, 150)), "PNG")
    at = data.find(b"IDAT") - 4
    return data[:at] + _chunk(b"prVt", b"") * count + data[at:]


def jpeg_marker_flood(count: int = 5_000_000, marker: bytes = b"\xff\xe5\x00\x02") -> bytes:
    """A small JPEG with ``count`` copies of ``marker`` (an empty APP5 segment) after SOI."""
    data = encoded(Image.new("RGB", (400, 400), (90, 120, 150)), "JPEG")
    return data[:2] + marker * count + data[2:]


def exif_bomb(entries: int = 65535) -> bytes:
    """A PNG whose eXIf chunk is one IFD of ``entries`` tags (the most one IFD holds)."""
    ifd = struct.pack("<H", entries) + b"".join(
        struct.pack("<HHII", 0x9000 + index % 0x6000, 4, 1, index) for index in range(entries)
    )
    exif = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    data = encoded(Image.new("RGB", (400, 400), (90, 120, 150)), "PNG")
    at = data.find(b"IDAT") - 4
    return data[:at] + _chunk(b"eXIf", exif) + data[at:]


def malformed_exif_jpeg() -> bytes:
    """A JPEG whose EXIF orientation entry points past the end of its block."""
    image = Image.new("RGB", (640, 480), (90, 120, 150))
    exif = image.getexif()
    exif[0x0112] = 6
    block = bytearray(exif.tobytes())
    entry = block.find(struct.pack("<H", 0x0112))
    block[entry + 2 : entry + 8] = struct.pack("<HI", 3, 0x7FFF_FFFF)  # SHORT, absurd count
    return encoded(image, "JPEG", exif=bytes(block))


def padded_jpeg(total: int) -> bytes:
    """A real JPEG padded with comment segments to exactly ``total`` bytes."""
    data = encoded(Image.new("RGB", (640, 480), (90, 120, 150)), "JPEG")
    room, comments = total - len(data), []
    while room > 0:
        size = min(room, 4 + 65533)  # a segment: marker, length, at most 65533 bytes
        size -= 4 if 0 < room - size < 4 else 0
        comments.append(b"\xff\xfe" + struct.pack(">H", size - 2) + bytes(size - 4))
        room -= size
    padded = data[:2] + b"".join(comments) + data[2:]
    assert len(padded) == total
    return padded


def huge_gif(width: int = 9000, height: int = 9000) -> bytes:
    """A GIF whose screen and frame claim ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("P", (16, 16)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    frame = data.find(b"\x2c")
    data[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(data)
