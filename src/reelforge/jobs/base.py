"""What both job store backends share: argument checks, row conversion and the bookkeeping of
terminal transitions. The SQL stays in each backend (``sqlite.py``, ``postgres.py``)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from reelforge.contract import Status
from reelforge.jobs.model import (
    CANCELLED,
    WORKER_LOST,
    ApiKey,
    Completed,
    EventKind,
    Failed,
    Job,
    JobEvent,
    KeyLimits,
    Lease,
    Outcome,
    Phase,
    Priority,
)
from reelforge.request import JobRequest

CANCELLED_MESSAGE: Final = "cancelled by the client"
LIST_DIRECTIONS: Final = {"desc": ("<", "DESC"), "asc": (">", "ASC")}
"""``list``'s order → the cursor's comparison and the ORDER BY direction (constants that the
backends put into their SQL text; never a caller's string)."""
PRUNE_BATCH: Final = 1000
"""Most events ``prune_events`` deletes in one call (bounded work per call)."""


@dataclass(frozen=True)
class Ending:
    """What a terminal transition writes into the job, and the event it appends."""

    kind: EventKind
    status: Status
    error_name: str | None = None
    error_message: str | None = None
    video_key: str | None = None
    credits_used: float | None = None
    """None keeps the job's (a job cancelled or lost by the store cost nothing more)."""
    meta: dict[str, Any] | None = None
    """None keeps the job's."""
    data: dict[str, Any] = field(default_factory=dict)
    """The event's details."""

    def params(self) -> dict[str, Any]:
        """The bound parameters of a backend's terminal UPDATE (``meta`` as JSON text)."""
        return {
            "status": self.status.value,
            "error_name": self.error_name,
            "error_message": self.error_message,
            "video_key": self.video_key,
            "credits_used": self.credits_used,
            "meta": None if self.meta is None else dump_json(self.meta),
        }


def ending_of(outcome: Outcome) -> Ending:
    """The terminal transition a worker's ``finish`` asks for."""
    if isinstance(outcome, Completed):
        return Ending(
            EventKind.COMPLETED,
            Status.COMPLETED,
            video_key=outcome.video_key,
            credits_used=outcome.credits_used,
            meta=outcome.meta,
        )
    kind = EventKind.CANCELLED if outcome.error_name == CANCELLED else EventKind.ERROR
    return _error(kind, outcome.error_name, outcome.error_message, outcome.credits_used)


def cancelled() -> Ending:
    """A job its client cancelled, ended by the store (queued, or never to be queued again)."""
    return _error(EventKind.CANCELLED, CANCELLED, CANCELLED_MESSAGE, None)


def worker_lost(attempts: int) -> Ending:
    """A job whose lease expired on its last attempt."""
    times = "time" if attempts == 1 else "times"
    message = f"the worker stopped responding {attempts} {times}"
    return _error(EventKind.ERROR, WORKER_LOST, message, None)


def _error(kind: EventKind, name: str, message: str, credits_used: float | None) -> Ending:
    data = {"error_name": name, "error_message": message}
    return Ending(kind, Status.ERROR, name, message, credits_used=credits_used, data=data)


def dump_json(data: Mapping[str, Any]) -> str:
    """Strict JSON text: NaN and Infinity raise ``ValueError`` (PostgreSQL's jsonb refuses
    them, so SQLite does too)."""
    return json.dumps(data, allow_nan=False, separators=(",", ":"))


def _loaded(value: Any) -> Any:
    """A JSON column's value: SQLite gives text, PostgreSQL's jsonb gives Python data."""
    return json.loads(value) if isinstance(value, str | bytes) else value


@functools.lru_cache(maxsize=4096)
def _request_from_text(text: str) -> JobRequest:
    """A stored request read from its JSON text; remembered, as a job is read on every poll
    and its request never changes (a ``JobRequest`` is immutable)."""
    return JobRequest.from_json(json.loads(text))


def _request(value: Any) -> JobRequest:
    """The ``request`` column: JSON text (SQLite) or data (PostgreSQL's jsonb)."""
    if isinstance(value, str):
        return _request_from_text(value)
    return JobRequest.from_json(_loaded(value))


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A ``jobs`` row (keyed by column name; the columns match the record's fields) as a
    ``Job``."""
    fields = dict(row)
    fields["status"] = Status(fields["status"])
    fields["phase"] = None if fields["phase"] is None else Phase(fields["phase"])
    fields["request"] = _request(fields["request"])
    fields["meta"] = _loaded(fields["meta"])
    return Job(**fields)


KEY_LIMITS: Final = ("rpm", "max_queued", "max_running", "daily_video_seconds")
"""The ``api_keys`` columns of a key's own limits (``KeyLimits``' fields)."""


def new_key_row(
    *, name: str, key_hash: str, prefix: str, limits: KeyLimits, priority: Priority
) -> dict[str, Any]:
    """A new ``api_keys`` row's values, both stores' ``add_key`` parameters (but the time):
    a fresh id, the key's name, hash and prefix, its own limits and priority."""
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "key_hash": key_hash,
        "prefix": prefix,
        "priority": Priority(priority).value,
        **dataclasses.asdict(limits),
    }


def key_from_row(row: Mapping[str, Any]) -> ApiKey:
    """An ``api_keys`` row (id, name, created_at, revoked_at, prefix and ``KEY_LIMITS``) as an
    ``ApiKey``."""
    fields = dict(row)
    limits = KeyLimits(**{name: fields.pop(name) for name in KEY_LIMITS})
    return ApiKey(**fields, limits=limits)


def event_from_row(row: Mapping[str, Any]) -> JobEvent:
    """A ``job_events`` row as a ``JobEvent``."""
    fields = dict(row)
    fields["kind"] = EventKind(fields["kind"])
    fields["status"] = Status(fields["status"])
    fields["phase"] = None if fields["phase"] is None else Phase(fields["phase"])
    fields["data"] = _loaded(fields["data"])
    return JobEvent(**fields)


def event_params(
    row: Mapping[str, Any], kind: EventKind, data: Mapping[str, Any]
) -> dict[str, Any]:
    """The bound parameters of an event appended for the change that left ``row`` (a
    ``jobs`` row): the job's state after the change, at its ``updated_at``."""
    return {
        "job_id": row["id"],
        "owner": row["owner"],
        "kind": kind.value,
        "status": row["status"],
        "progress": row["progress"],
        "phase": row["phase"],
        "created_at": row["updated_at"],
        "data": dump_json(data),
    }


class StoreBase(ABC):
    """The part of ``Store`` that is the same on every backend: argument checks before any
    SQL runs, and ``complete``/``fail`` as forms of ``finish``."""

    @abstractmethod
    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        """See ``JobQueue.finish``."""

    @abstractmethod
    def _back_to_queue(
        self, lease: Lease, *, delay_seconds: float, retried: bool, reason: str
    ) -> bool:
        """Queue the leased job again, the attempt not charged (``retries`` one higher if
        ``retried``), not claimable for ``delay_seconds``, with a ``requeued`` event of
        ``reason``; a job its client asked to cancel ends ``Cancelled`` instead."""

    def release(self, lease: Lease) -> bool:
        """See ``JobQueue.release``."""
        return self._back_to_queue(lease, delay_seconds=0, retried=False, reason="released")

    def requeue(self, lease: Lease, *, delay_seconds: float, reason: str) -> bool:
        """See ``JobQueue.requeue``."""
        self._check_delay(delay_seconds)
        return self._back_to_queue(lease, delay_seconds=delay_seconds, retried=True, reason=reason)

    def complete(
        self, lease: Lease, *, video_key: str, credits_used: float, meta: dict[str, Any]
    ) -> bool:
        """``finish(lease, Completed(...))``."""
        return self.finish(lease, Completed(video_key, credits_used, meta))

    def fail(
        self, lease: Lease, *, error_name: str, error_message: str, credits_used: float
    ) -> bool:
        """``finish(lease, Failed(...))``."""
        return self.finish(lease, Failed(error_name, error_message, credits_used))

    @staticmethod
    def _new_job(
        *,
        owner: str,
        model: str,
        request: JobRequest,
        max_attempts: int,
        dialect: str,
        callback_url: str | None,
        lora: str | None,
        now: float | None,
    ) -> dict[str, Any]:
        """The bound parameters of ``create``'s INSERT: a fresh id and the request as JSON
        text; ``ValueError`` if ``max_attempts`` < 1 or the request holds NaN or Infinity."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        return {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "model": model,
            "request": dump_json(request.to_json()),
            "max_attempts": max_attempts,
            "dialect": dialect,
            "callback_url": callback_url,
            "lora": lora,
            "now": now,
        }

    @staticmethod
    def _check_lease(lease_seconds: float) -> None:
        if not lease_seconds > 0 or math.isinf(lease_seconds):
            raise ValueError(f"lease_seconds must be positive and finite, got {lease_seconds}")

    @staticmethod
    def _check_progress(progress: int | None) -> None:
        if progress is not None and not 0 <= progress <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {progress}")

    @staticmethod
    def _check_delay(delay_seconds: float) -> None:
        if not 0 <= delay_seconds < math.inf:
            raise ValueError(f"delay_seconds must be 0 or more and finite, got {delay_seconds}")

    @staticmethod
    def _list_direction(limit: int, order: str) -> tuple[str, str]:
        """``list``'s checks: the cursor's comparison and the ORDER BY direction of
        ``order``; ``ValueError`` for a ``limit`` below 1 or an unknown ``order``."""
        StoreBase._check_limit(limit)
        if order not in LIST_DIRECTIONS:
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        return LIST_DIRECTIONS[order]

    @staticmethod
    def _check_limit(limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
