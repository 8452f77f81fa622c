"""Signed, expiring video links, served with HTTP Range support (browsers seek with it).

A ``Range`` header in another unit than bytes, or not well formed (``bytes=100-50``), is
ignored and the whole file answered (RFC 9110, 14.2); an unsatisfiable one is 416."""

from __future__ import annotations

import re
from typing import Annotated, Final

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.types import Receive, Scope, Send

from reelforge.api.deps import ServicesDep
from reelforge.api.openapi import error_responses
from reelforge.errors import Forbidden, Gone, InvalidRequest, NotFound
from reelforge.storage.local import LocalStorage

router = APIRouter()

_RANGE_SPEC: Final = r"[ \t]*(?:[0-9]+-[0-9]*|-[0-9]+)[ \t]*"
_BYTE_RANGES: Final = re.compile(rf"bytes={_RANGE_SPEC}(?:,{_RANGE_SPEC})*", re.IGNORECASE)


def valid_byte_ranges(value: str) -> bool:
    """Whether a ``Range`` value is a well-formed RFC 9110 byte-range set: ``bytes=`` and
    ``first-last``, ``first-`` or ``-suffix`` specs, each ``last`` at least its ``first``."""
    if _BYTE_RANGES.fullmatch(value) is None:
        return False
    for spec in value.partition("=")[2].split(","):
        first, _, last = spec.strip().partition("-")
        if first and last and int(last) < int(first):
            return False
    return True


class VideoFile(FileResponse):
    """A ``FileResponse`` that ignores a ``Range`` it would otherwise answer with 400."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        if any(
            name == b"range" and not valid_byte_ranges(v.decode("latin-1")) for name, v in headers
        ):
            scope = {**scope, "headers": [(n, v) for n, v in headers if n != b"range"]}
        await super().__call__(scope, receive, send)


# Two routes, not one with two methods: each OpenAPI operation needs its own id.
@router.get(
    "/files/{key:path}",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The video."},
        206: {"description": "The ranges asked for (``Range: bytes=...``)."},
        **error_responses(InvalidRequest, Forbidden, NotFound, Gone, 416),
    },
)
@router.head("/files/{key:path}", response_class=FileResponse, include_in_schema=False)
def signed_file(
    key: str,
    services: ServicesDep,
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query(max_length=128)],
) -> FileResponse:
    if not isinstance(services.storage, LocalStorage):  # object stores hand out their own links
        raise NotFound("no such file")
    path = services.storage.open_signed(key, expires, signature)
    return VideoFile(
        path, media_type="video/mp4", filename=path.name, content_disposition_type="inline"
    )
