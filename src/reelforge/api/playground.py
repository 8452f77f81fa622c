"""The playground: a page at ``/`` for trying reelforge in a browser, served from the package
(``static/playground``: plain HTML, CSS and JavaScript modules; no build step, nothing from
another origin).

The page holds no key: the user types theirs, the browser keeps it in its local storage and
sends it as a bearer token to the same API any client uses. The page reads what it may offer
(models, lengths, resolutions, the image rules, the camera commands) from ``GET /v2/models``,
so that its checks and the API's are one set of rules.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from reelforge.api.headers import PLAYGROUND_POLICY
from reelforge.errors import NotFound

ASSETS: Final = "/playground"
_FOLDER: Final = resources.files("reelforge.api") / "static" / "playground"
_FILES: Final = {
    "playground.css": "text/css",
    "playground.js": "text/javascript",
    "api.js": "text/javascript",
    "frames.js": "text/javascript",
    "history.js": "text/javascript",
    "progress.js": "text/javascript",
}
"""The page's files: anything else under ``ASSETS`` is 404."""

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The playground's page, under its own Content-Security-Policy (``PLAYGROUND_POLICY``)."""
    return _file("index.html", "text/html; charset=utf-8", PLAYGROUND_POLICY)


@router.get(ASSETS + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of the page's scripts or its stylesheet."""
    if name not in _FILES:
        raise NotFound("no such file")
    return _file(name, _FILES[name])


def files() -> tuple[str, ...]:
    """The names ``asset`` serves."""
    return tuple(_FILES)


def _file(name: str, media_type: str, policy: str | None = None) -> FileResponse:
    headers = {"Content-Security-Policy": policy} if policy else None
    with resources.as_file(_FOLDER / name) as path:
        return FileResponse(Path(path), media_type=media_type, headers=headers)
