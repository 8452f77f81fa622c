"""Accepting a create request, whatever its dialect: every rule of the model checked, then the
job committed.

A dialect parses its wire body into a ``Submission`` (its own rules already checked) and
calls ``accept``. Inline images (base64) go through the intake checks here, at submit time,
and are kept in storage; URL images are only checked for form here and fetched (guarded) by
the worker. Errors name the field in the dialect's words (``Submission.fields``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import urlsplit

from reelforge.api.admission import Gate
from reelforge.engines.registry import Capabilities, ModelSpec, capabilities
from reelforge.errors import InvalidRequest
from reelforge.jobs.model import Job, Store
from reelforge.media.camera import parse_camera
from reelforge.media.intake import load_image, source_size
from reelforge.media.sizing import output_size
from reelforge.request import Dimensions, ImageRef, JobRequest
from reelforge.storage.base import Storage

_DATA_URI: Final = re.compile(
    r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.-]+)*);base64,", re.I
)
MAX_URL_CHARS: Final = 4096


@dataclass(frozen=True)
class ImageInput:
    """An image as the client sent it: a URL to fetch later, or the bytes of an inline one."""

    field: str
    """The client's name for it (``first_frame_image``, ``input_reference``, ...)."""
    url: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Submission:
    """A create request a dialect has parsed: ``request`` without its images, which are in
    ``first``/``last`` until ``accept`` checks and keeps them."""

    model: str
    request: JobRequest
    dialect: str
    first: ImageInput | None = None
    last: ImageInput | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    """``JobRequest`` field name → the dialect's name for it, for error messages."""
    callback_url: str | None = None
    lora: str | None = None

    def name(self, canonical: str) -> str:
        return self.fields.get(canonical, canonical)


def webhook_url(url: str | None, field: str = "callback_url") -> str | None:
    """``url`` if it is an ``http(s)`` URL with a host (and a port, if any, that is a
    number); ``InvalidRequest`` naming ``field`` otherwise. Where it may point (public
    addresses only, unless ``webhook_allow_private``) is checked when it is called."""
    if url is None:
        return None
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(field, f"is {len(url)} characters; at most {MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        valid = valid and parts.port != 0
    except ValueError:  # a port that is not a number, a malformed IPv6 address
        valid = False
    if not valid:
        raise InvalidRequest(field, f"must be an http(s) URL with a host (got {url[:200]!r})")
    return url


def accept(
    submission: Submission,
    *,
    gate: Gate,
    models: Mapping[str, ModelSpec],
    max_attempts: int,
    queue: Store,
    storage: Storage,
) -> Job:
    """The job an earlier request with the same idempotency key made (``Gate.earlier``); else
    check ``submission`` against its model, keep its inline images and commit it as queued
    if ``gate``'s limits allow (``RateLimited``, ``QueueFull`` if not)."""
    earlier = gate.earlier(queue, submission)
    if earlier is not None:
        return earlier
    try:
        return _admit(submission, gate, models, max_attempts, queue, storage)
    except BaseException:
        gate.abandon(queue)
        raise


def _admit(
    submission: Submission,
    gate: Gate,
    models: Mapping[str, ModelSpec],
    max_attempts: int,
    queue: Store,
    storage: Storage,
) -> Job:
    spec = models.get(submission.model)
    if spec is None:
        known = ", ".join(sorted(models))
        raise InvalidRequest(
            submission.name("model"), f"{submission.model!r} is not served here; known: {known}"
        )
    can = capabilities(spec)
    _check_keyframes(submission, can)
    _check_request(submission, can)
    first_size, last_size = _checked_size(submission.first), _checked_size(submission.last)
    _check_size(submission, can, first_size or last_size)
    request = replace(
        submission.request,
        first_frame=_keep(submission.first, storage),
        last_frame=_keep(submission.last, storage),
    )
    return queue.create(
        owner=gate.owner,
        model=submission.model,
        request=request,
        max_attempts=max_attempts,
        dialect=submission.dialect,
        callback_url=submission.callback_url,
        lora=submission.lora,
        admission=gate.admission(request.duration_s),
    )


def _check_keyframes(submission: Submission, can: Capabilities) -> None:
    """What the model can start from and end on."""
    model = submission.model
    first_field = submission.first.field if submission.first else submission.name("first_frame")
    last_field = submission.last.field if submission.last else submission.name("last_frame")
    if submission.first is None and not can.text:
        raise InvalidRequest(
            first_field,
            f"model {model!r} needs a first frame image; it cannot start from the prompt alone",
        )
    if submission.first is not None and not can.first_frame:
        raise InvalidRequest(first_field, f"model {model!r} cannot start from an image")
    if submission.last is not None and not can.last_frame:
        raise InvalidRequest(last_field, f"model {model!r} cannot end on an image")
    if submission.first is not None and submission.last is None and can.last_frame_required:
        raise InvalidRequest(
            last_field, f"model {model!r} needs a last frame image to go with the first"
        )


def _check_request(submission: Submission, can: Capabilities) -> None:
    """The prompt, the length, the frame rate and the options the model takes."""
    request, model = submission.request, submission.model
    if not request.prompt.strip():
        raise InvalidRequest(submission.name("prompt"), "must not be blank")
    refused = can.timing_refusal(request, f"model {model!r}")
    if refused is not None:
        raise InvalidRequest(submission.name(refused[0]), refused[1])
    for option in request.options:
        if option not in can.request_options:
            raise InvalidRequest(
                submission.name(option), f"model {model!r} does not take this option"
            )
    parse_camera(request.prompt)


def _check_size(
    submission: Submission, can: Capabilities, keyframe: tuple[int, int] | None
) -> None:
    """An explicit size, or the size a resolution class gives this keyframe, is one the model
    can make: even sides, the short one at least ``min_short_side``, the long one at most
    ``max_long_side``."""
    size = submission.request.size
    width, height = output_size(size, keyframe)
    problem = can.size_refusal(width, height)
    if problem is not None:
        shown = str(size) if isinstance(size, Dimensions) else f"{size.value} ({width}x{height})"
        raise InvalidRequest(
            submission.name("size"),
            f"{shown} is not a size model {submission.model!r} makes; " + problem,
        )


def _checked_size(image: ImageInput | None) -> tuple[int, int] | None:
    """An inline image decoded and checked against the intake rules: its size; None for a URL
    (the worker checks it once fetched) or no image."""
    if image is None or image.data is None:
        return None
    return source_size(load_image(image.data, field=image.field))


def _keep(image: ImageInput | None, storage: Storage) -> ImageRef | None:
    """The stored reference of ``image``: its URL, or the storage key of its (checked) bytes."""
    if image is None:
        return None
    if image.data is None:
        return ImageRef(field=image.field, url=image.url)
    return ImageRef(field=image.field, key=storage.save_input(image.data))


def image_input(value: str | None, field: str) -> ImageInput | None:
    """A wire image value (an http(s) URL, a ``data:image/...;base64,`` URI or bare base64)
    as an ``ImageInput``; ``InvalidRequest`` naming ``field`` if it is none of those."""
    if value is None:
        return None
    if value[:8].lower().startswith(("http://", "https://")):
        return ImageInput(field=field, url=_checked_url(value, field))
    return ImageInput(field=field, data=_decode_base64(value, field))


def _checked_url(url: str, field: str) -> str:
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(field, f"URL is {len(url)} characters; the limit is {MAX_URL_CHARS}")
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
