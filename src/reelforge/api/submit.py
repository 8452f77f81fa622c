"""Accepting a create request: every rule checked at the boundary, then the job committed.

Base64 images go through the intake checks here, at submit time, and are kept in storage;
URL images are only checked for form here and fetched (guarded) by the worker.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

from reelforge.api.schemas import Submission
from reelforge.contract import check_length
from reelforge.engines.registry import ModelSpec
from reelforge.errors import InvalidRequest
from reelforge.jobs.model import Job, JobStore
from reelforge.media.camera import parse_camera
from reelforge.media.intake import load_image
from reelforge.settings import Settings
from reelforge.storage.base import Storage

_DATA_URI = re.compile(
    r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.-]+)*);base64,", re.I
)
_MAX_URL_CHARS = 4096


def accept(
    submission: Submission,
    *,
    owner: str,
    settings: Settings,
    models: dict[str, ModelSpec],
    store: JobStore,
    storage: Storage,
) -> Job:
    """Check ``submission`` against the contract and the model, then commit it as queued."""
    spec = models.get(submission.model)
    if spec is None:
        known = ", ".join(sorted(models))
        raise InvalidRequest("model", f"{submission.model!r} is not served here; known: {known}")
    if submission.first_image is None and not spec.text:
        raise InvalidRequest(
            submission.first_field,
            f"model {submission.model!r} needs a first frame image; it cannot start from the "
            "prompt alone",
        )
    if submission.first_image is not None and not spec.first_frame:
        raise InvalidRequest(
            submission.first_field, f"model {submission.model!r} cannot start from an image"
        )
    if submission.last_image is not None and not spec.last_frame:
        raise InvalidRequest(
            submission.last_field, f"model {submission.model!r} cannot end on an image"
        )
    if (
        submission.first_image is not None
        and submission.last_image is None
        and spec.last_frame_required
    ):
        raise InvalidRequest(
            submission.last_field,
            f"model {submission.model!r} needs a last frame image to go with the first",
        )
    if not submission.prompt.strip():
        raise InvalidRequest("prompt", "must not be blank")
    check_length(submission.duration, submission.resolution)
    parse_camera(submission.prompt)
    request: dict[str, Any] = {
        "prompt": submission.prompt,
        "duration": submission.duration,
        "resolution": submission.resolution.value,
        "prompt_optimizer": submission.prompt_optimizer,
        "seed": submission.seed,
        "first_frame": _image_ref(submission.first_image, submission.first_field, storage),
        "last_frame": _image_ref(submission.last_image, submission.last_field, storage),
    }
    return store.create(
        owner=owner, model=submission.model, request=request, max_attempts=settings.max_attempts
    )


def _image_ref(value: str | None, field: str, storage: Storage) -> dict[str, str] | None:
    """``{"url": ...}`` for a URL the worker will fetch, ``{"key": ...}`` for a kept image;
    ``field`` keeps the client's name for the image, for error messages."""
    if value is None:
        return None
    if value[:8].lower().startswith(("http://", "https://")):
        return {"url": _checked_url(value, field), "field": field}
    data = _decode_base64(value, field)
    load_image(data, field=field)
    return {"key": storage.save_input(data), "field": field}


def _checked_url(url: str, field: str) -> str:
    if len(url) > _MAX_URL_CHARS:
        raise InvalidRequest(field, f"URL is {len(url)} characters; the limit is {_MAX_URL_CHARS}")
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        raise InvalidRequest(field, f"not a valid URL ({exc})") from exc
    if not host:
        raise InvalidRequest(field, "URL has no host")
    return url


def _decode_base64(value: str, field: str) -> bytes:
    match = _DATA_URI.match(value)
    payload = value[match.end() :] if match else value
    if not match and value.lower().startswith("data:"):
        raise InvalidRequest(field, "data URI must be of the form data:image/<type>;base64,<data>")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            field, "not an http(s) URL, a data:image/...;base64 URI or base64 image data"
        ) from exc
