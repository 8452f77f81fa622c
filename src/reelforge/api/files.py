"""Signed, expiring video links, served with HTTP Range support (browsers seek with it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from reelforge.api.deps import ServicesDep
from reelforge.errors import NotFound
from reelforge.storage.local import LocalStorage

router = APIRouter()


# Two routes, not one with two methods: each OpenAPI operation needs its own id.
@router.get("/files/{key:path}", response_class=FileResponse)
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
    return FileResponse(
        path, media_type="video/mp4", filename=path.name, content_disposition_type="inline"
    )
