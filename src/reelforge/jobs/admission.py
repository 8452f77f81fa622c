"""What a create's admission asks of the job store: the owner's usage, counted in the database
in the create's own transaction (so limits hold across API processes and machines), and the
idempotency keys of recent creates.

The store only counts and records; the API decides what the counts mean
(``reelforge.api.admission``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from reelforge.jobs.model import Job

RATE_WINDOW_SECONDS: Final = 60.0
"""The window of a key's creates-per-minute limit (sliding)."""
DAY_SECONDS: Final = 86400
IDEMPOTENCY_SECONDS: Final = 86400.0
"""How long an idempotency key is honoured; older ones are ignored, then pruned."""
IDEMPOTENCY_PENDING_SECONDS: Final = 300.0
"""How long a key whose first request never finished (its process died) refuses the key with
``IdempotencyConflict``; past it, the next request with the key takes it over."""


@dataclass(frozen=True)
class Usage:
    """One owner's use of the service at ``now`` (epoch seconds), read in one transaction."""

    now: float
    created_last_minute: int
    """Jobs the owner created in the last ``RATE_WINDOW_SECONDS`` (deleted ones included)."""
    oldest_last_minute: float | None
    """When the oldest of those was created."""
    queued: int
    """The owner's jobs queued now."""
    queued_video_seconds: int
    """Seconds of video those queued jobs ask for."""
    started_video_seconds_today: int
    """Seconds of video of the owner's jobs first started since the last UTC midnight
    (whatever became of them since: cancelled, failed or deleted, they still count)."""
    queued_everywhere: int
    """Jobs queued now, of every owner."""


@dataclass(frozen=True)
class Admission:
    """What ``JobQueue.create`` does besides inserting the job, in the same transaction."""

    check: Callable[[Usage], None] | None = None
    """Sees the owner's usage before the insert; whatever it raises refuses the create. None:
    nothing is counted (no limit configured)."""
    idempotency_key: str | None = None
    """A key ``reserve_idempotency`` reserved for this create, bound to the new job."""


@dataclass(frozen=True)
class Reservation:
    """An idempotency key that another request of its owner took first."""

    fingerprint: str
    """The canonical hash of that request."""
    job: Job | None
    """The job it made (as it is now, even if deleted); None while it is being admitted."""


class IdempotencyStore(Protocol):
    """The ``Idempotency-Key`` of each owner's creates of the last ``IDEMPOTENCY_SECONDS``."""

    def reserve_idempotency(self, *, owner: str, key: str, fingerprint: str) -> Reservation | None:
        """Take ``key`` for a create of ``owner`` with this ``fingerprint``: None if it was
        free (unknown, older than ``IDEMPOTENCY_SECONDS``, or pending for longer than
        ``IDEMPOTENCY_PENDING_SECONDS``) and is now this create's (committed); otherwise
        what holds it. Two callers never both get None."""
        ...

    def abandon_idempotency(self, *, owner: str, key: str) -> None:
        """Free ``key`` if no job was bound to it (its create was refused or failed)."""
        ...
