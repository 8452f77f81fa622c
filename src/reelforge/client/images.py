"""Images for a create call: URLs pass through; local ones (a path, bytes, a PIL image) are
checked against the contract here, before any upload, and sent as base64 data URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from reelforge.client.errors import InvalidInput
from reelforge.errors import InvalidRequest
from reelforge.media.intake import load_image

ImageInput = str | Path | bytes | Image.Image
"""An ``http(s)://`` URL or ``data:`` URI (sent as is), a file path, file bytes, or a PIL image."""


def image_field(value: ImageInput | None, *, field: str) -> str | None:
    """The wire form of an image; ``InvalidRequest`` naming ``field`` if it breaks a rule."""
    if value is None:
        return None
    if isinstance(value, str) and value.lower().startswith(("http://", "https://", "data:")):
        return value
    try:
        data = _bytes_of(value, field)
        load_image(data, field=field)  # the contract's rules, before anything is sent
    except InvalidRequest as exc:
        raise InvalidInput(field, exc.message.removeprefix(f"{field}: ")) from exc
    kind = "png" if data.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _bytes_of(value: str | Path | bytes | Image.Image, field: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.convert("RGB").save(buffer, "PNG")
        return buffer.getvalue()
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {value}: {exc.strerror}") from exc
