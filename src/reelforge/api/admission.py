"""What a create must pass besides its model's rules, whatever its dialect: its
``Idempotency-Key`` and its API key's limits (``reelforge.jobs.admission`` counts; this
module decides).

- Idempotency: the same key from the same API key within 24 h, with the same parsed request
  (``fingerprint``: multipart boundaries and JSON spacing do not matter), answers with the job
  the first request made; with another request, 422 ``IdempotencyMismatch``; while the first
  is still being admitted, 409 ``IdempotencyConflict`` with ``Retry-After``.
- Limits (a key's own, else the ``REELFORGE_KEY_*`` defaults): creates per minute, jobs
  queued at once and seconds of video per UTC day (started today plus queued plus this
  request) answer 429 ``RateLimited`` with ``Retry-After`` and the ``RateLimit-Policy`` /
  ``RateLimit`` fields of draft-ietf-httpapi-ratelimit-headers (structured fields); the
  service's cap on queued jobs answers 503 ``QueueFull``. Jobs running at once is the
  claim's limit, not the create's.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from reelforge.errors import (
    IdempotencyConflict,
    IdempotencyMismatch,
    InvalidRequest,
    QueueFull,
    RateLimited,
)
from reelforge.jobs.admission import DAY_SECONDS, RATE_WINDOW_SECONDS, Admission, Usage
from reelforge.jobs.model import ApiKey, Job, KeyLimits, Store

if TYPE_CHECKING:
    from reelforge.api.accept import ImageInput, Submission

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255
CONFLICT_RETRY_SECONDS: Final = 1
"""``Retry-After`` of an ``IdempotencyConflict``: the first request is usually done by then."""
QUEUED_RETRY_SECONDS: Final = 10
"""``Retry-After`` when a queue limit is reached: about when a job may have left the queue."""


@dataclass(frozen=True)
class Gate:
    """One create's admission: whose it is, the limits it is held to and its idempotency key."""

    owner: str
    limits: KeyLimits
    """The caller's limits, defaults filled in."""
    max_queued: int | None = None
    """The service's cap on queued jobs (all keys)."""
    idempotency_key: str | None = None

    @classmethod
    def of(
        cls, caller: ApiKey, defaults: KeyLimits, max_queued: int | None, key: str | None
    ) -> Gate:
        """The gate of ``caller``'s create; ``InvalidRequest`` naming ``Idempotency-Key`` if
        ``key`` is empty or longer than ``MAX_IDEMPOTENCY_KEY_CHARS``."""
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidRequest(
                IDEMPOTENCY_HEADER,
                f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters (got {len(key)})",
            )
        return cls(caller.id, caller.limits.over(defaults), max_queued, key)

    def earlier(self, store: Store, submission: Submission) -> Job | None:
        """The job an earlier request with this idempotency key made, to answer with again;
        None if this create goes on (the key, if any, is now reserved for it: ``abandon`` it
        if the create fails). Raises ``IdempotencyMismatch`` or ``IdempotencyConflict``."""
        if self.idempotency_key is None:
            return None
        mine = fingerprint(submission)
        held = store.reserve_idempotency(
            owner=self.owner, key=self.idempotency_key, fingerprint=mine
        )
        if held is None:
            return None
        if held.job is None:  # answered first: whether the bodies differ shows later
            raise IdempotencyConflict(
                f"a request with {IDEMPOTENCY_HEADER} {self.idempotency_key!r} is still being"
                " processed; try again shortly",
                retry_after=CONFLICT_RETRY_SECONDS,
            )
        if held.fingerprint != mine:
            raise IdempotencyMismatch(
                IDEMPOTENCY_HEADER,
                f"{self.idempotency_key!r} was used for a different request in the last 24 h;"
                " send a new key for a new request",
            )
        return held.job

    def abandon(self, store: Store) -> None:
        """Free the reserved idempotency key of a create that did not make a job."""
        if self.idempotency_key is not None:
            store.abandon_idempotency(owner=self.owner, key=self.idempotency_key)

    def admission(self, video_seconds: int) -> Admission:
        """What the store does in the create's transaction: the checks (none, and nothing
        counted, when no limit is set) and the idempotency key to bind."""
        limits = self.limits
        counted = (self.max_queued, limits.rpm, limits.max_queued, limits.daily_video_seconds)
        limited = any(limit is not None for limit in counted)
        check = (lambda usage: self.check(usage, video_seconds)) if limited else None
        return Admission(check=check, idempotency_key=self.idempotency_key)

    def check(self, usage: Usage, video_seconds: int) -> None:
        """Refuse a create of ``video_seconds`` of video given the owner's ``usage``."""
        rpm, queued = self.limits.rpm, self.limits.max_queued
        if rpm is not None and usage.created_last_minute >= rpm:
            oldest = usage.oldest_last_minute or usage.now
            wait = oldest + RATE_WINDOW_SECONDS - usage.now
            self._refuse("rpm", wait, 0, f"this API key may create {rpm} videos a minute")
        if queued is not None and usage.queued >= queued:
            message = f"this API key may have {queued} jobs queued at once; it has {usage.queued}"
            self._refuse("queued", QUEUED_RETRY_SECONDS, 0, message)
        self._check_daily(usage, video_seconds)
        if self.max_queued is not None and usage.queued_everywhere >= self.max_queued:
            raise QueueFull(
                f"the service holds {usage.queued_everywhere} queued jobs, as many as it takes;"
                " try again later",
                retry_after=QUEUED_RETRY_SECONDS,
            )

    def _check_daily(self, usage: Usage, video_seconds: int) -> None:
        limit = self.limits.daily_video_seconds
        if limit is None:
            return
        used = usage.started_video_seconds_today + usage.queued_video_seconds
        if used + video_seconds > limit:
            message = (
                f"this API key may generate {limit} s of video a UTC day; it started"
                f" {usage.started_video_seconds_today} s today and has"
                f" {usage.queued_video_seconds} s queued, and this asks for {video_seconds} s"
            )
            wait = DAY_SECONDS - usage.now % DAY_SECONDS
            self._refuse("daily", wait, max(0, limit - used), message)

    def _refuse(self, policy: str, wait: float, remaining: int, message: str) -> None:
        seconds = max(1, math.ceil(wait))
        raise RateLimited(
            f"{message}; try again in {seconds} s",
            retry_after=seconds,
            headers={
                "RateLimit-Policy": ", ".join(policies(self.limits)),
                "RateLimit": f'"{policy}";r={remaining};t={seconds}',
            },
        )


def policies(limits: KeyLimits) -> list[str]:
    """The ``RateLimit-Policy`` members of ``limits`` (structured-field list items)."""
    found = []
    if limits.rpm is not None:
        found.append(f'"rpm";q={limits.rpm};w={int(RATE_WINDOW_SECONDS)}')
    if limits.max_queued is not None:
        found.append(f'"queued";q={limits.max_queued};qu="concurrent-requests"')
    if limits.daily_video_seconds is not None:
        found.append(f'"daily";q={limits.daily_video_seconds};w={DAY_SECONDS};qu="video-seconds"')
    return found


def fingerprint(submission: Submission) -> str:
    """A hash of the parsed request (model, dialect, every field, the images' URLs or bytes'
    hashes): equal for two sends of one request, whatever their encoding."""
    canonical: dict[str, Any] = {
        "dialect": submission.dialect,
        "model": submission.model,
        "request": submission.request.to_json(),
        "first": _image(submission.first),
        "last": _image(submission.last),
        "callback_url": submission.callback_url,
        "lora": submission.lora,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _image(image: ImageInput | None) -> dict[str, str] | None:
    if image is None:
        return None
    if image.data is None:
        return {"field": image.field, "url": image.url or ""}
    return {"field": image.field, "sha256": hashlib.sha256(image.data).hexdigest()}
