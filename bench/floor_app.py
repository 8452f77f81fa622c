"""The floor of the service benchmark's poll: a bare Starlette app that does what any poll
route must (answer GET on the poll path, refuse a request without an Authorization header)
and nothing else, with a constant answer the size and shape of a completed Hailuo poll.

``bench/service.py`` serves it with ``python -m uvicorn`` and the uvicorn settings of
``reelforge serve``, loads it like reelforge's poll, and prints reelforge's server CPU per poll
as a multiple of this app's.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness import ROUTE

ANSWER = json.dumps(
    {
        "id": "cc678742e12640d492e172806950521c",
        "status": "completed",
        "video": {
            "url": "http://127.0.0.1:40000/files/videos/cc678742e12640d492e172806950521c"
            "-c8d1995dd0a5.mp4?expires=1796164887&signature=4b16c134c2ac8c3359c6802e3395a0eb"
            "f2e503c89acf37054bbd4560fc349b0b"
        },
        "error": None,
        "meta": {
            "usage": {"credits_used": 0.134},
            "video": {
                "engine": "preview",
                "fps": 25,
                "width": 342,
                "height": 192,
                "seed": 721118675,
                "camera": [["Truck left", "Zoom in"]],
            },
        },
        "progress": 100,
        "model": "minimax/hailuo-02",
        "created_at": 1796161287.821964,
        "finished_at": 1796161287.9601622,
    },
    separators=(",", ":"),
).encode()
"""A real answer of reelforge's poll for a completed preview job (536 bytes)."""
REFUSAL = b'{"error":{"name":"Unauthorized","message":"missing Authorization header"}}'


async def poll(request: Request) -> Response:
    if "authorization" not in request.headers:
        return Response(REFUSAL, status_code=401, media_type="application/json")
    return Response(ANSWER, media_type="application/json")


async def healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app() -> Starlette:
    """The app, for ``uvicorn --factory``."""
    return Starlette(routes=[Route(ROUTE, poll), Route("/healthz", healthz)])
