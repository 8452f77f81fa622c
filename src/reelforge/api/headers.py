"""Security headers on every answer: ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer`` always, and a strict ``Content-Security-Policy`` on HTML
(the API docs: scripts and styles only from this server, nothing framed, no forms).

Three places add them, so that no answer goes out without: ``SecurityHeaders`` (the
outermost middleware) on every answer that passes it; ``api.errors`` on every error it
renders (the server-error handler answers outside every middleware); and the hot routes
(``api.hot``), which skip the middleware for speed, append ``SECURITY_HEADERS`` themselves.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
HTML_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The docs pages' policy: Swagger UI and ReDoc set inline styles (hence ``'unsafe-inline'``
for styles only) and ReDoc searches in a worker made from a blob."""
PLAYGROUND_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: https:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The playground's policy (``api.playground``), stricter on styles than ``HTML_POLICY``
(no inline style at all) and wider only where its media need it: history thumbnails are
blob URLs of authenticated fetches, and a video may play from object storage's presigned
``https:`` link (the local store's links are same-origin)."""
_HTML_CSP: Final = (b"content-security-policy", HTML_POLICY.encode())


def with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` (an ASGI response's) with the security headers added where missing, the
    CSP where the body is HTML."""
    names = {name.lower() for name, _ in headers}
    if b"x-content-type-options" in names:
        return headers
    added = [*headers, *SECURITY_HEADERS]
    is_html = any(
        name.lower() == b"content-type" and value.startswith(b"text/html")
        for name, value in headers
    )
    if is_html and b"content-security-policy" not in names:
        added.append(_HTML_CSP)
    return added


class SecurityHeaders:
    """ASGI middleware: the security headers on every HTTP answer, except GETs of
    ``hot_paths`` (bare apps that send them themselves, ``api.hot``)."""

    def __init__(self, app: ASGIApp, *, hot_paths: Collection[str]) -> None:
        self.app = app
        self.hot_paths = frozenset(hot_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["path"] in self.hot_paths and scope["method"] == "GET"
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": with_security_headers(list(message["headers"]))}
            await send(message)

        await self.app(scope, receive, send_with_headers)
