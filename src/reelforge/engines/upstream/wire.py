"""What every provider's wire shares: one HTTP call with its failures sorted, the poll's
answer, the waiting hints, and keyframes as data URLs.

A call's failures are of three kinds: ``Transient`` (429, 5xx, a provider's "busy" code, the
network: try again later), ``UpstreamRejected`` (any other 4xx: the request's fault, with
the provider's message) and ``UpstreamFailed`` (an answer that cannot be read).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx
from PIL import Image

from reelforge.engines.base import Keyframes
from reelforge.errors import UpstreamFailed, UpstreamRejected
from reelforge.request import Dimensions, JobRequest, Resolution

MAX_MESSAGE_CHARS: Final = 500
"""A provider's message is cut to this many characters before it reaches a job's error."""


class Transient(Exception):
    """The provider cannot answer now; ``after``: the seconds it asked to wait, if it did."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


@dataclass(frozen=True)
class Poll:
    """One look at a provider's job: ``done`` with a ``video`` URL (absolute; ``signed``: the
    URL itself grants access, no key may be sent to it), or ``failure`` with the provider's
    message, or still running with ``progress`` percent if the provider says; ``after``: the
    seconds the provider asked to wait before the next look."""

    done: bool = False
    video: str | None = None
    signed: bool = True
    failure: str | None = None
    progress: int | None = None
    after: float | None = None


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """``client.request(...)``, its failures sorted (module docstring); a 2xx or 3xx answer."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise Transient(f"{method} {path}: {type(exc).__name__}") from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise Transient(f"{method} {path}: HTTP {status}", wait_hint(response))
    if status >= 400:
        raise UpstreamRejected(f"the provider refused it (HTTP {status}): {message_of(response)}")
    return response


def body_of(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; ``UpstreamFailed`` if it is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamFailed(f"the provider's answer is not a JSON object: {response.text[:200]!r}")
    return body


def field(body: Mapping[str, Any], *path: str) -> Any:
    """``body[path[0]][path[1]]...``; ``UpstreamFailed`` naming the path if it is missing."""
    value: Any = body
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) is None:
            raise UpstreamFailed(f"the provider's answer has no {'.'.join(path)}: {body!r}"[:300])
        value = value[key]
    return value


def message_of(response: httpx.Response) -> str:
    """The provider's own words about a refusal: ``error.message``, ``message``,
    ``base_resp.status_msg`` or ``detail``, else the body's text; cut short."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_MESSAGE_CHARS]
    return describe(body)


def describe(body: Any) -> str:
    """The message inside an error body (see ``message_of``)."""
    if isinstance(body, Mapping):
        for path in (("error", "message"), ("message",), ("base_resp", "status_msg"), ("detail",)):
            value: Any = body
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if isinstance(value, str) and value:
                return value[:MAX_MESSAGE_CHARS]
    return str(body)[:MAX_MESSAGE_CHARS]


def wait_hint(response: httpx.Response) -> float | None:
    """Seconds the provider asked to wait: ``openai-poll-after-ms``, else ``Retry-After``
    (seconds or an HTTP date); None if it did not ask or the value cannot be read."""
    after_ms = response.headers.get("openai-poll-after-ms")
    if after_ms is not None:
        try:
            return max(0.0, float(after_ms) / 1000)
        except ValueError:
            return None
    retry = response.headers.get("retry-after")
    if retry is None:
        return None
    try:
        return max(0.0, float(retry))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(retry)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def data_url(image: Image.Image | None) -> str | None:
    """``image`` as a base64 PNG data URL (what every provider takes for a frame)."""
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def hailuo_body(
    model: str, request: JobRequest, keyframes: Keyframes, *, last_field: str
) -> dict[str, Any]:
    """The create body both Hailuo-shaped wires take (the AI/ML API's legacy route and
    MiniMax's own): they differ only in the last frame's name, ``last_field``. Unset extras
    are left out."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "duration": request.duration_s,
        "resolution": resolution(request),
        "prompt_optimizer": request.prompt_optimizer,
    }
    extras = {
        "first_frame_image": data_url(keyframes.first),
        last_field: data_url(keyframes.last),
        "seed": request.seed,
    }
    return body | {name: value for name, value in extras.items() if value is not None}


def resolution(request: JobRequest) -> str:
    """The request's size as a resolution class (``768P``, ``1080P``): explicit dimensions
    become the class of their short side."""
    size = request.size
    if isinstance(size, Dimensions):
        return (Resolution.P1080 if min(size.width, size.height) >= 1080 else Resolution.P768).value
    return size.value
