"""The hot routes: GET paths answered by bare ASGI apps before FastAPI's middleware and
routing (about half of a poll's cost otherwise, ``bench/service.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from reelforge.api.errors import reelforge_error_response
from reelforge.errors import ReelforgeError


class HotRoutes:
    """ASGI middleware: a GET for one of ``routes``' paths goes straight to its app; anything
    else to ``app``. A reelforge error the hot app raises is rendered by ``api.errors`` like
    any other; an unexpected one reaches the server-error handler as any other would."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if hot is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        try:
            await hot(scope, receive, send)
        except ReelforgeError as exc:
            await reelforge_error_response(scope["path"], exc)(scope, receive, send)
