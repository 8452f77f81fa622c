"""The small error vocabulary of reelforge, each error with the HTTP status it maps to.

Messages are written for the client: they name the field and the value at fault and are
safe to return verbatim. ``name`` is what a failed generation reports as ``error.name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class ReelforgeError(Exception):
    """Base of every error reelforge raises on purpose."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def name(self) -> str:
        return type(self).__name__


class InvalidRequest(ReelforgeError):
    """The request breaks a rule of the contract; ``field`` names the part at fault."""

    status_code = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidImage(InvalidRequest):
    """An image failed the intake checks (format, size, ratio, pixels)."""


class ImageFetchFailed(ReelforgeError):
    """An image URL could not be fetched safely (blocked address, deadline, size cap)."""

    status_code = 400


class Unauthorized(ReelforgeError):
    status_code = 401


class Forbidden(ReelforgeError):
    status_code = 403


class NotFound(ReelforgeError):
    status_code = 404


class Gone(ReelforgeError):
    status_code = 410


class Unprocessable(ReelforgeError):
    """What was asked for cannot be given, though the request is well formed (the content of a
    failed generation)."""

    status_code = 422


class PayloadTooLarge(ReelforgeError):
    status_code = 413


class IdempotencyMismatch(InvalidRequest):
    """An ``Idempotency-Key`` already used by its API key for a different request."""

    status_code = 422


class Busy(ReelforgeError):
    """Refused for now: the client may send it again after ``retry_after`` seconds.
    ``headers`` (besides ``Retry-After``) go with the answer."""

    def __init__(
        self, message: str, *, retry_after: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class IdempotencyConflict(Busy):
    """A request with this ``Idempotency-Key`` is still being admitted."""

    status_code = 409


class RateLimited(Busy):
    """The API key is over one of its limits (creates per minute, jobs queued, video seconds
    per day)."""

    status_code = 429


class QueueFull(Busy):
    """The service holds as many queued jobs as it takes (``REELFORGE_MAX_QUEUED``)."""

    status_code = 503


class Unavailable(ReelforgeError):
    """The server is at a limit it sets itself (live streams); try again later."""

    status_code = 503


class EngineFailed(ReelforgeError):
    """The generator itself failed on a request it had accepted."""


class StorageFailed(ReelforgeError):
    """Inputs or the video could not be loaded or stored (storage or database away), after
    the job was queued again as often as allowed."""


class TimedOut(ReelforgeError):
    """The job ran past its model's wall-clock limit."""


class Cancelled(Exception):
    """Raised from a progress callback to stop a generation at the next step."""


class OutOfMemory(EngineFailed):
    """The accelerator ran out of memory on this request; the message names what to change."""
