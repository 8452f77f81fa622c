"""A cap on request bodies, enforced while they stream in (declared length or not)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge.api.errors import error_response

_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware answering 413 once a body passes ``limit`` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)  # no route of these reads a body
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False
        replaced = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            # FastAPI catches the error raised by ``counting_receive`` while it reads the
            # body and answers 400 itself: that answer is dropped and ours sent instead.
            nonlocal started, replaced
            if message["type"] == "http.response.start" and not started:
                started = True
                replaced = seen > self.limit
                if replaced:
                    await self._refuse(scope, receive, send)
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {self.limit} bytes"
        response = error_response(scope["path"], 413, "PayloadTooLarge", message)
        await response(scope, receive, send)
