"""Image intake: decode image bytes and check them against the contract before any work.

Nothing is corrected silently: an image that breaks a rule is refused with a message that
names the field and the value. EXIF orientation is applied (it is how the image is meant
to be seen), and the checks run on the oriented image.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from reelforge.contract import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_RATIO,
    MIN_IMAGE_RATIO,
    MIN_IMAGE_SHORT_SIDE,
)
from reelforge.errors import InvalidImage

ACCEPTED_FORMATS = ("JPEG", "PNG")


def load_image(data: bytes, *, field: str) -> Image.Image:
    """Decode ``data`` as a JPG/PNG image and check the contract's rules.

    Returns a fully decoded RGB image with EXIF orientation applied.
    Raises ``InvalidImage`` naming ``field`` for any broken rule.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidImage(
            field, f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes (20 MB)"
        )
    return _decode(data, field)


def _decode(data: bytes, field: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its pixel limit and twice that; both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as opened:
                _check_geometry(_oriented_size(opened), field)  # from the header: no decode yet
                oriented = ImageOps.exif_transpose(opened)
                if "transparency" in oriented.info:
                    oriented = oriented.convert("RGBA")  # the palette's alpha, before dropping it
                return oriented.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(field, f"image has too many pixels to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(field, "image is not a JPG/JPEG or PNG file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(field, f"image could not be decoded ({exc})") from exc


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    """The size the image has once its EXIF orientation is applied, read from the header."""
    width, height = image.size
    transposed = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    return (height, width) if transposed else (width, height)


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
