"""Any ``/v1/videos`` server (OpenAI's Videos API, vLLM-Omni, SGLang Diffusion, another
reelforge) under a base URL ending in ``/v1``: create (JSON, or multipart with an
``input_reference`` image), retrieve with ``openai-poll-after-ms``, download from
``/videos/{id}/content`` with the key, cancel by ``DELETE``."""

from __future__ import annotations

import base64
from typing import Any, Final

import httpx

from reelforge.engines.base import Keyframes
from reelforge.engines.upstream.wire import Poll, body_of, call, data_url, field, wait_hint
from reelforge.request import Dimensions, JobRequest, Resolution

VIDEOS: Final = "/videos"


class OpenAI:
    """The ``openai`` provider."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def submit(
        self, client: httpx.Client, model: str, request: JobRequest, keyframes: Keyframes
    ) -> str:
        fields: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "seconds": str(request.duration_s),
            "size": _size(request),
        }
        # reelforge's extensions, sent only when the client asked for them
        extras = {"seed": request.seed, "fps": request.fps}
        fields |= {name: value for name, value in extras.items() if value is not None}
        files = {
            name: (f"{name}.png", base64.b64decode(url.split(",", 1)[1]), "image/png")
            for name, image in (
                ("input_reference", keyframes.first),
                ("last_reference", keyframes.last),
            )
            if (url := data_url(image)) is not None
        }
        if files:
            form = {name: str(value) for name, value in fields.items()}
            response = call(client, "POST", VIDEOS, data=form, files=files)
        else:
            response = call(client, "POST", VIDEOS, json=fields)
        return str(field(body_of(response), "id"))

    def poll(self, client: httpx.Client, upstream_id: str) -> Poll:
        response = call(client, "GET", f"{VIDEOS}/{upstream_id}")
        answer = body_of(response)
        status = answer.get("status")
        if status == "completed":
            # The content route takes the key: the engine sends it to this base URL only.
            return Poll(
                done=True, video=f"{self.base_url}{VIDEOS}/{upstream_id}/content", signed=False
            )
        if status == "failed":
            error = answer.get("error") or {}
            return Poll(failure=str(error.get("message") or error.get("code") or "failed"))
        progress = answer.get("progress")
        return Poll(
            progress=progress if isinstance(progress, int) else None, after=wait_hint(response)
        )

    def cancel(self, client: httpx.Client, upstream_id: str) -> None:
        call(client, "DELETE", f"{VIDEOS}/{upstream_id}")


def _size(request: JobRequest) -> str:
    """``WxH``: the request's dimensions, or its resolution class's landscape size."""
    size = request.size
    if isinstance(size, Dimensions):
        return str(size)
    width, height = Resolution(size).landscape_size
    return f"{width}x{height}"
