"""MiniMax's native video API under the host root: ``POST /v1/video_generation``, ``GET
/v1/query/video_generation``, ``GET /v1/files/retrieve`` for the download URL. MiniMax
answers refusals with HTTP 200 and ``base_resp.status_code`` other than 0; it has no cancel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from reelforge.engines.base import Keyframes
from reelforge.engines.upstream.wire import (
    Poll,
    Transient,
    body_of,
    call,
    field,
    hailuo_body,
    wait_hint,
)
from reelforge.errors import UpstreamRejected
from reelforge.request import JobRequest

CREATE: Final = "/v1/video_generation"
QUERY: Final = "/v1/query/video_generation"
RETRIEVE: Final = "/v1/files/retrieve"
TRANSIENT_CODES: Final = frozenset({1000, 1001, 1002, 1039})
"""``base_resp.status_code``s worth trying again: unknown error, timeout, rate limit, token
limit."""


class MiniMax:
    """The ``minimax`` provider."""

    def submit(
        self, client: httpx.Client, model: str, request: JobRequest, keyframes: Keyframes
    ) -> str:
        body = hailuo_body(model, request, keyframes, last_field="last_frame_image")
        return str(field(_checked(call(client, "POST", CREATE, json=body)), "task_id"))

    def poll(self, client: httpx.Client, upstream_id: str) -> Poll:
        response = call(client, "GET", QUERY, params={"task_id": upstream_id})
        answer = _checked(response)
        status = answer.get("status")
        if status == "Fail":
            error = answer.get("error")
            message = error.get("message") if isinstance(error, Mapping) else None
            return Poll(failure=str(message or answer["base_resp"].get("status_msg") or status))
        if status != "Success":
            return Poll(after=wait_hint(response))
        file_id = str(field(answer, "file_id"))
        retrieved = _checked(call(client, "GET", RETRIEVE, params={"file_id": file_id}))
        return Poll(done=True, video=str(field(retrieved, "file", "download_url")))

    def cancel(self, client: httpx.Client, upstream_id: str) -> None:
        """MiniMax cannot cancel a task: nothing to do."""


def _checked(response: httpx.Response) -> dict[str, Any]:
    """The answer, its ``base_resp`` a success; ``Transient`` or ``UpstreamRejected``
    (with MiniMax's ``status_msg``) otherwise."""
    answer = body_of(response)
    base = answer.get("base_resp")
    code = base.get("status_code", 0) if isinstance(base, Mapping) else 0
    if code == 0:
        return answer
    message = str(base.get("status_msg", "")) if isinstance(base, Mapping) else ""
    if code in TRANSIENT_CODES:
        raise Transient(f"MiniMax status {code}: {message}", wait_hint(response))
    raise UpstreamRejected(f"the provider refused it (status {code}): {message}")
