"""The AI/ML API's Hailuo routes (the contract reelforge serves, ``shared/contract.md``):
create and poll on the legacy route under a base URL ending in ``/v2``. Cancel is
reelforge's extension (``DELETE`` on the same route); another provider may refuse it."""

from __future__ import annotations

from typing import Final

import httpx

from reelforge.engines.base import Keyframes
from reelforge.engines.upstream.wire import Poll, body_of, call, field, hailuo_body
from reelforge.engines.upstream.wire import wait_hint as hint
from reelforge.request import JobRequest

ROUTE: Final = "/generate/video/minimax/generation"


class AIML:
    """The ``aiml`` provider."""

    def submit(
        self, client: httpx.Client, model: str, request: JobRequest, keyframes: Keyframes
    ) -> str:
        body = hailuo_body(model, request, keyframes, last_field="last_image_url")
        answer = body_of(call(client, "POST", ROUTE, json=body))
        return str(field(answer, "generation_id"))

    def poll(self, client: httpx.Client, upstream_id: str) -> Poll:
        response = call(client, "GET", ROUTE, params={"generation_id": upstream_id})
        answer = body_of(response)
        status = answer.get("status")
        if status == "completed":
            return Poll(done=True, video=str(field(answer, "video", "url")))
        if status == "error":
            error = answer.get("error") or {}
            return Poll(failure=str(error.get("message") or error.get("name") or "error"))
        progress = answer.get("progress")
        return Poll(progress=progress if isinstance(progress, int) else None, after=hint(response))

    def cancel(self, client: httpx.Client, upstream_id: str) -> None:
        call(client, "DELETE", ROUTE, params={"generation_id": upstream_id})
