"""The job store's records and the interface every store backend implements.

Who moves a job between states (only store methods do; the schema refuses anything else):

- ``queued``: entered by ``create``; by ``release`` (a draining worker hands it back, the
  attempt not charged); by the expired-lease pass when attempts remain. Left by ``claim``.
- ``generating``: entered by ``claim`` only; the job then holds a lease (token + expiry)
  that its worker keeps alive with ``heartbeat``. Left by ``complete``, ``fail``,
  ``release``, or the expired-lease pass.
- ``completed``: entered by ``complete``; terminal.
- ``error``: entered by ``fail``, or by the expired-lease pass once ``attempts`` reached
  ``max_attempts`` (error name ``WorkerLost``); terminal.

Every method that acts on a lease is conditional on the job still being ``generating``
with that lease's token: a worker whose lease expired and was taken over gets ``False``
and must stop, and its late writes change nothing.

All times are epoch seconds read from the store's injected clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, Protocol

from reelforge.contract import Status

WORKER_LOST: Final = "WorkerLost"
REPORT_SECONDS: Final = 5.0
"""How often an idle worker reports itself (``report_worker``); ``/readyz`` allows 3 missed."""
CANCELLED: Final = "Cancelled"
"""``error_name`` of a job its client cancelled."""
"""``error_name`` of a job whose worker stopped renewing its lease ``max_attempts`` times."""


@dataclass(frozen=True)
class Job:
    """One generation request and everything the store knows about its progress."""

    id: str
    """A uuid4 hex string."""
    owner: str
    """Id of the API key that created the job."""
    model: str
    request: dict[str, Any]
    """The validated request, as JSON-serialisable data."""
    status: Status
    progress: int
    """Percent done, 0..100."""
    attempts: int
    """Claims charged so far; never above ``max_attempts``."""
    max_attempts: int
    lease_token: str | None
    lease_expires_at: float | None
    worker_id: str | None
    """The worker holding the job, or the last one that held it if it ended in error/done."""
    error_name: str | None
    error_message: str | None
    video_key: str | None
    """Storage key of the finished MP4."""
    credits_used: float | None
    """Compute seconds spent on the job."""
    meta: dict[str, Any]
    """Facts the engine reported (fps, size, ...), as JSON-serialisable data."""
    created_at: float
    updated_at: float
    started_at: float | None
    """Time of the first claim; kept across re-queues."""
    finished_at: float | None
    purged_at: float | None = None
    """When retention deleted the job's video and inputs."""
    cancel_requested_at: float | None = None
    """When the client asked to cancel a running job (its worker stops at the next step)."""


@dataclass(frozen=True)
class Lease:
    """A worker's right to work on ``job``, proven by ``token``.

    ``job`` is the snapshot taken at claim time; it is not refreshed by ``heartbeat``.
    """

    job: Job
    token: str

    @property
    def job_id(self) -> str:
        return self.job.id


@dataclass(frozen=True)
class ApiKey:
    """A stored API key. The store keeps only its hash; ``prefix`` is for display."""

    id: str
    name: str
    created_at: float
    revoked_at: float | None
    prefix: str
    """The first 8 characters of the plaintext key."""


class JobStore(Protocol):
    """Durable storage of jobs and API keys, shared by the API process and the workers."""

    def create(self, *, owner: str, model: str, request: dict[str, Any], max_attempts: int) -> Job:
        """Store a new ``queued`` job and return it.

        The job is committed durably before this returns: the API may answer the client
        as soon as it has the job. Raises ``ValueError`` if ``max_attempts`` < 1 and
        ``TypeError``/``ValueError`` if ``request`` is not strict JSON data.
        """
        ...

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job with this id, or None if missing.

        With ``owner`` given, a job of another owner is None too (indistinguishable from
        a missing one).
        """
        ...

    def claim(
        self, *, worker_id: str, lease_seconds: float, models: Collection[str] | None = None
    ) -> Lease | None:
        """Settle expired leases, then lease the oldest queued job; None if there is none.

        Oldest means smallest ``created_at``, then smallest ``id``. Only jobs whose model
        is in ``models`` are considered (None means any model; empty means none). The
        claimed job is ``generating`` with a fresh token, a lease ending ``lease_seconds``
        from now, ``attempts`` one higher, ``progress`` 0 and ``started_at`` set if it
        was not. Both steps run in one transaction, so two workers never get one job.
        """
        ...

    def heartbeat(self, lease: Lease, *, lease_seconds: float, progress: int | None = None) -> bool:
        """Extend the lease to ``lease_seconds`` from now and set ``progress`` if given.

        False if the lease was lost (the job is no longer ``generating`` with this
        token) or its client asked to cancel it: the worker must stop (and ``fail`` a
        cancelled job). A lease past its expiry that nobody has settled
        yet is still held and can be extended. Raises ``ValueError`` for ``progress``
        outside 0..100 or ``lease_seconds`` <= 0.
        """
        ...

    def complete(
        self, lease: Lease, *, video_key: str, credits_used: float, meta: dict[str, Any]
    ) -> bool:
        """Mark the job ``completed`` with its video, progress 100, lease cleared.

        False, changing nothing, if the lease was lost.
        """
        ...

    def fail(
        self, lease: Lease, *, error_name: str, error_message: str, credits_used: float
    ) -> bool:
        """Mark the job ``error`` with this error, lease cleared.

        False, changing nothing, if the lease was lost.
        """
        ...

    def release(self, lease: Lease) -> bool:
        """Hand the job back to the queue without charging the attempt (draining workers).

        The job becomes ``queued`` with ``attempts`` one lower, progress 0, no lease and
        no worker. False, changing nothing, if the lease was lost.
        """
        ...

    def settle_expired(self) -> int:
        """Deal with ``generating`` jobs whose lease expired before now; return how many.

        A job with attempts left goes back to ``queued`` (lease and worker cleared,
        progress 0); one that used all its attempts becomes ``error`` ``WorkerLost``.
        """
        ...

    def counts(self) -> dict[Status, int]:
        """How many jobs are in each status; every status is a key, even at 0."""
        ...

    def add_key(self, *, name: str, key_hash: str, prefix: str) -> ApiKey:
        """Store a new API key by its hash and return it.

        The store never sees a plaintext key; hashing is the caller's job. A hash already
        stored is refused by the database's unique constraint.
        """
        ...

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash; None if unknown or revoked."""
        ...

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        """Revoke the active key with this id or display prefix.

        False if no active key matches. Raises ``ValueError``, revoking nothing, if a
        prefix matches several active keys.
        """
        ...

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from another thread) when a job may have been created anywhere.

        A hint to wake idle workers early, not a guarantee: a store may call it spuriously
        or never (SQLite's workers poll), so workers still poll, only less often.
        """
        ...

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        """The client's cancel: a queued job ends in ``error`` (``Cancelled``) at once; a
        generating one is marked, its heartbeats then fail and its worker ends it; an ended
        one is left as it is. None if ``owner`` has no such job."""
        ...

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        """A worker with ``models`` loaded is alive now (its readiness, for ``/readyz``)."""
        ...

    def ready_models(self, *, seen_since: float) -> set[str]:
        """Models some worker reported loaded at or after ``seen_since``."""
        ...

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        """Hold the named chore (a periodic task one worker runs at a time) for ``seconds``:
        True if it was free, expired, or already ``holder``'s."""
        ...

    def finished_before(self, cutoff: float, *, limit: int) -> list[Job]:
        """Up to ``limit`` ended, not yet purged jobs that finished before ``cutoff``, oldest
        first."""
        ...

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        """Which of the input-image ``keys`` a not yet purged job, other than the jobs
        ``excluding``, still refers to."""
        ...

    def mark_purged(self, job_ids: Collection[str]) -> None:
        """Record that the jobs' files are gone (``purged_at``)."""
        ...

    def close(self) -> None:
        """Release the store's connections; the store is unusable afterwards."""
        ...
