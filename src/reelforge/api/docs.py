"""The API's docs pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with their
scripts and styles from the installed packages: they work offline and under the HTML
Content-Security-Policy of ``api.headers`` (no inline script, nothing from another origin).

The Swagger UI (Apache-2.0) and ReDoc (MIT) bundles come from the ``fastapi-offline``
package (MIT), which ships them; ``static/swagger-init.js`` is ours.
"""

from __future__ import annotations

from html import escape
from importlib import resources
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from reelforge.errors import NotFound

ASSETS: Final = "/docs/assets"
_BUNDLES: Final = resources.files("fastapi_offline") / "static"
_OURS: Final = resources.files("reelforge.api") / "static"
_FILES: Final = {
    "swagger-ui-bundle.js": (_BUNDLES, "text/javascript"),
    "swagger-ui.css": (_BUNDLES, "text/css"),
    "redoc.standalone.js": (_BUNDLES, "text/javascript"),
    "favicon.png": (_BUNDLES, "image/png"),
    "swagger-init.js": (_OURS, "text/javascript"),
}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return HTMLResponse(
        _page(
            "Swagger UI",
            root,
            head=f'<link rel="stylesheet" href="{root}{ASSETS}/swagger-ui.css">',
            body=(
                '<div id="swagger-ui"></div>'
                f'<script src="{root}{ASSETS}/swagger-ui-bundle.js"></script>'
                f'<script src="{root}{ASSETS}/swagger-init.js" '
                f'data-openapi-url="{root}/openapi.json"></script>'
            ),
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return HTMLResponse(
        _page(
            "ReDoc",
            root,
            head="",
            body=(
                f'<redoc spec-url="{root}/openapi.json"></redoc>'
                f'<script src="{root}{ASSETS}/redoc.standalone.js"></script>'
            ),
        )
    )


@router.get(ASSETS + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of the docs pages' files (a fixed list; anything else is 404)."""
    if name not in _FILES:
        raise NotFound("no such file")
    folder, media_type = _FILES[name]
    with resources.as_file(folder / name) as path:
        return FileResponse(Path(path), media_type=media_type)


def _root(request: Request) -> str:
    """The app's path prefix behind a proxy (``root_path``), escaped for an attribute."""
    return escape(str(request.scope.get("root_path", "")).rstrip("/"))


def _page(title: str, root: str, *, head: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>reelforge - {title}</title>"
        f'<link rel="icon" href="{root}{ASSETS}/favicon.png">{head}</head>'
        f"<body>{body}</body></html>"
    )
