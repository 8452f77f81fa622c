"""The job store's records and the interfaces its callers use.

Who moves a job between states (only store methods do, each change appended to the event log
in the same transaction; the schema refuses impossible rows):

- ``queued``: entered by ``create`` (event ``queued``); by ``release`` (a draining worker hands
  it back, the attempt not charged), by ``requeue`` (a storage or database blip: the attempt
  not charged, ``retries`` one higher, not claimable before ``run_after``) and by the
  expired-lease pass when attempts remain (all three: event ``requeued``). Left by ``claim``
  (event ``started``) and by ``cancel`` (event ``cancelled``).
- ``generating``: entered by ``claim`` only; the job then holds a lease (token + expiry) that
  its worker keeps alive with ``heartbeat`` (event ``progress``, at most one a second, or on a
  change of ``phase``). Left by ``finish``, ``release``, ``requeue`` or the expired-lease
  pass.
- ``completed``: entered by ``finish`` with ``Completed``; terminal (event ``completed``).
- ``error``: entered by ``finish`` with ``Failed`` (event ``error``, or ``cancelled`` for a
  job its client cancelled), by ``cancel`` of a queued job, by the expired-lease pass once
  ``attempts`` reached ``max_attempts`` (``WorkerLost``), and by ``release``/``requeue``/the
  expired-lease pass of a job whose client asked to cancel it (``Cancelled``: a cancelled job
  is never queued again). Terminal.

``delete`` (its owner's) cancels the job as ``cancel`` does, then sets ``deleted_at`` (event
``deleted``, the status unchanged): every read then treats the job as missing. Its files are
removed by the caller (``retention.discard_files``); retention later marks it purged.

Every terminal transition goes through one method of each backend; every method that acts
on a lease is conditional on the job still being ``generating`` with that lease's token: a
worker whose lease expired and was taken over gets ``False`` and must stop, and its late
writes change nothing.

Times are epoch seconds: on SQLite from the store's clock (one machine), on PostgreSQL from
the database's ``now()`` unless a clock is injected (tests), so that clock skew between
machines cannot hand a live lease to a second worker.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

from reelforge.contract import Status
from reelforge.jobs.admission import Admission, IdempotencyStore
from reelforge.jobs.outbox import Outbox
from reelforge.request import JobRequest

WORKER_LOST: Final = "WorkerLost"
"""``error_name`` of a job whose worker stopped renewing its lease ``max_attempts`` times."""
CANCELLED: Final = "Cancelled"
"""``error_name`` of a job its client cancelled."""
STORAGE_FAILED: Final = "StorageFailed"
"""``error_name`` of a job whose inputs or video could not be loaded or stored, after retries."""
REPORT_SECONDS: Final = 5.0
"""How often an idle worker reports itself (``report_worker``); ``/readyz`` allows 3 missed."""
PROGRESS_EVENT_SECONDS: Final = 1.0
"""Least time between two ``progress`` events of one job (a phase change is always recorded)."""
PROGRESS_EVENTS_KEPT_SECONDS: Final = 60.0
"""How long after its job ended a ``progress`` event is kept (``prune_events``)."""
DEFAULT_DIALECT: Final = "hailuo"
PACE_WEIGHT: Final = 0.2
"""The weight of the newest completion in a model's moving mean of generation seconds
(``model_pace``): the mean follows a change of pace within about ten jobs."""


class Phase(StrEnum):
    """What a running job is doing (for progress and ETA)."""

    PREPARING = "preparing"
    """Loading or fetching its input images."""
    OPTIMIZING = "optimizing"
    """Rewriting the prompt."""
    GENERATING = "generating"
    ENCODING = "encoding"
    STORING = "storing"


class Priority(StrEnum):
    """A key's place in the fair claim: every queued job of a higher priority's keys is
    claimed before a lower one's; keys of one priority take turns."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class EventKind(StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    REQUEUED = "requeued"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"
    DELETED = "deleted"
    """Its owner deleted the job (the status is what it was, or ``error`` if it was queued)."""


ListOrder = Literal["asc", "desc"]
"""``list``'s order by creation time: ``desc`` newest first."""


@dataclass(frozen=True)
class Job:
    """One generation request and everything the store knows about its progress."""

    id: str
    """A uuid4 hex string."""
    owner: str
    """Id of the API key that created the job."""
    model: str
    request: JobRequest
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
    dialect: str = DEFAULT_DIALECT
    """The wire dialect that created the job (``hailuo``, ``openai``, ``minimax``)."""
    callback_url: str | None = None
    """Where the job's webhooks go, if its creator named a place."""
    upstream_id: str | None = None
    """The job's id at a hosted provider (the gateway engine)."""
    lora: str | None = None
    """The adapter the request asked for, by name."""
    deleted_at: float | None = None
    """When its owner deleted the job (it is then hidden from every read)."""
    phase: Phase | None = None
    """What the running job is doing; None when it is not running."""
    retries: int = 0
    """Times the job was queued again after a storage or database blip (not crash attempts)."""
    run_after: float | None = None
    """A requeued job is not claimed before this time."""


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
class JobEvent:
    """One entry of the event log: a change of one job, in commit order of ``id``."""

    id: int
    """Increases with every event appended anywhere."""
    job_id: str
    owner: str
    kind: EventKind
    status: Status
    """The job's status after the change."""
    progress: int
    phase: Phase | None
    created_at: float
    data: dict[str, Any]
    """Details of the change: ``error_name``/``error_message`` of an error, ``reason`` of a
    requeue (``lease expired``, ``released``, ``storage``), ``attempts``."""


@dataclass(frozen=True)
class Completed:
    """How a job ended well: its video and what it cost."""

    video_key: str
    credits_used: float
    meta: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """How a job ended badly: the error's name and message, and what it cost."""

    error_name: str
    error_message: str
    credits_used: float


Outcome = Completed | Failed


@dataclass(frozen=True)
class KeyLimits:
    """What one API key may do; None: no limit of its own (``over`` fills in the defaults)."""

    rpm: int | None = None
    """Creates per minute (a sliding 60 s window)."""
    max_queued: int | None = None
    """Jobs queued at once."""
    max_running: int | None = None
    """Jobs generating at once (the claim skips the key's jobs past it)."""
    daily_video_seconds: int | None = None
    """Seconds of video per UTC day, counted when a job starts generating."""

    def over(self, defaults: KeyLimits) -> KeyLimits:
        """These limits, each one unset taken from ``defaults``."""
        return KeyLimits(
            rpm=_first(self.rpm, defaults.rpm),
            max_queued=_first(self.max_queued, defaults.max_queued),
            max_running=_first(self.max_running, defaults.max_running),
            daily_video_seconds=_first(self.daily_video_seconds, defaults.daily_video_seconds),
        )


def _first(own: int | None, default: int | None) -> int | None:
    return default if own is None else own


NO_LIMITS: Final = KeyLimits()


@dataclass(frozen=True)
class ApiKey:
    """A stored API key. The store keeps only its hash; ``prefix`` is for display."""

    id: str
    name: str
    created_at: float
    revoked_at: float | None
    prefix: str
    """The first 8 characters of the plaintext key."""
    limits: KeyLimits = NO_LIMITS
    """The key's own limits (unset ones are the ``REELFORGE_KEY_*`` defaults)."""
    priority: Priority = Priority.NORMAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "priority", Priority(self.priority))


@dataclass(frozen=True)
class ModelOutlook:
    """What a model's queue looks like now, as ``Coordination.outlook`` reads it."""

    order: tuple[str, ...]
    """The model's queued job ids, the next to start first (the fair order's approximation:
    ``outlook``'s docstring)."""
    generation_seconds: float | None
    """The moving mean of its completed jobs' generation seconds; None before the first."""
    workers: int
    """Workers with the model loaded that reported lately or hold a lease now (a worker
    reports only between jobs)."""
    running_since: tuple[float, ...]
    """When each of its generating jobs started (store clock, epoch seconds), oldest first."""
    now: float
    """The store's clock when this was read, epoch seconds."""


class JobQueue(Protocol):
    """Jobs from submission to their end: what the API and the workers use."""

    def create(
        self,
        *,
        owner: str,
        model: str,
        request: JobRequest,
        max_attempts: int,
        dialect: str = DEFAULT_DIALECT,
        callback_url: str | None = None,
        lora: str | None = None,
        admission: Admission | None = None,
    ) -> Job:
        """Store a new ``queued`` job (event ``queued``) and return it.

        Committed durably before this returns: the API may answer the client as soon as it
        has the job. Raises ``ValueError`` if ``max_attempts`` < 1 or the request cannot be
        stored (NaN, a NUL character PostgreSQL refuses). With ``admission``, in the same
        transaction and serialised with every other admitted create of ``owner``: its
        ``check`` sees the owner's ``Usage`` first (whatever it raises refuses the create),
        and its idempotency key is bound to the new job.
        """
        ...

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        """The job with this id, or None if missing or deleted.

        With ``owner`` given, a job of another owner is None too (indistinguishable from a
        missing one).
        """
        ...

    def list(
        self, *, owner: str, limit: int, after: str | None = None, order: ListOrder = "desc"
    ) -> list[Job]:
        """``owner``'s jobs by creation time (then id), newest first with ``desc``, at most
        ``limit``; with ``after`` (a job id, deleted or not), those past that job in this
        order (none if ``owner`` has no such job). Deleted jobs are left out. An index scan
        (``jobs_owner_newest``). Raises ``ValueError`` if ``limit`` < 1 or ``order`` is
        neither ``asc`` nor ``desc``."""
        ...

    def delete(self, job_id: str, *, owner: str) -> Job | None:
        """The owner's delete: cancel the job as ``cancel`` does, then set ``deleted_at``
        (event ``deleted``), one transaction. Returns the job as deleted, for the caller to
        remove its files; None if ``owner`` has no such job, or it was deleted already."""
        ...

    def claim(
        self, *, worker_id: str, lease_seconds: float, models: Collection[str] | None = None
    ) -> Lease | None:
        """Settle expired leases, then lease the next claimable queued job in the fair
        order; None if none.

        The fair order takes turns across keys (a job's ``owner``): among the keys with a
        claimable job, those of the highest ``Priority`` (a key the store does not know is
        ``normal``), of them those with the fewest generating jobs, of them the one whose
        newest job started longest ago (never first); then that key's oldest job. Oldest
        means smallest ``created_at``, then smallest ``id``; a job with ``run_after`` in the
        future is not claimable yet. Only jobs whose model is in ``models`` are
        considered (None means any model; empty means none). The claimed job is
        ``generating`` with a fresh token, a lease ending ``lease_seconds`` from now,
        ``attempts`` one higher, ``progress`` 0, phase ``preparing`` and ``started_at`` set
        if it was not (event ``started``). One transaction: two workers never get one job.
        """
        ...

    def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: int | None = None,
        phase: Phase | None = None,
    ) -> bool:
        """Extend the lease to ``lease_seconds`` from now; set ``progress``/``phase`` if given.

        False if the lease was lost (the job is no longer ``generating`` with this token) or
        its client asked to cancel it: the worker must stop (and ``finish`` a cancelled job).
        A lease past its expiry that nobody has settled yet is still held and can be extended.
        Raises ``ValueError`` for ``progress`` outside 0..100 or ``lease_seconds`` <= 0.
        """
        ...

    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        """End the job: ``completed`` with its video (progress 100), or ``error``; lease
        cleared. False, changing nothing, if the lease was lost."""
        ...

    def complete(
        self, lease: Lease, *, video_key: str, credits_used: float, meta: dict[str, Any]
    ) -> bool:
        """``finish(lease, Completed(...))``."""
        ...

    def fail(
        self, lease: Lease, *, error_name: str, error_message: str, credits_used: float
    ) -> bool:
        """``finish(lease, Failed(...))``."""
        ...

    def release(self, lease: Lease) -> bool:
        """Hand the job back to the queue without charging the attempt (draining workers).

        The job becomes ``queued`` with ``attempts`` one lower, progress 0, no lease and no
        worker; a job whose client asked to cancel it ends ``Cancelled`` instead. False,
        changing nothing, if the lease was lost.
        """
        ...

    def requeue(self, lease: Lease, *, delay_seconds: float, reason: str) -> bool:
        """Queue the job again after a failure that is not its fault (storage, database):
        as ``release``, but ``retries`` one higher and not claimable for ``delay_seconds``.
        A job whose client asked to cancel it ends ``Cancelled`` instead. False, changing
        nothing, if the lease was lost."""
        ...

    def set_upstream(self, lease: Lease, upstream_id: str) -> bool:
        """Keep the job's id at a hosted provider (``upstream_id``), so that a later attempt
        polls that job instead of submitting again. No event (the job's state is unchanged).
        False, changing nothing, if the lease was lost."""
        ...

    def fall_back(self, lease: Lease, *, model: str, reason: str) -> bool:
        """Hand the job to another served ``model`` after its own failed not by the request's
        fault: as ``release`` (queued at once, the attempt not charged), but ``model`` set and
        ``upstream_id`` cleared; event ``requeued`` with ``reason`` and ``model``. A job its
        client asked to cancel ends ``Cancelled`` instead. False, changing nothing, if the
        lease was lost."""
        ...

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        """The client's cancel: a queued job ends in ``error`` (``Cancelled``) at once; a
        generating one is marked, its heartbeats then fail and its worker ends it; an ended
        one is left as it is. None if ``owner`` has no such job."""
        ...

    def settle_expired(self) -> int:
        """Deal with ``generating`` jobs whose lease expired before now; return how many.

        A job with attempts left goes back to ``queued`` (lease and worker cleared, progress
        0); one that used all its attempts becomes ``error`` ``WorkerLost``; one its client
        asked to cancel becomes ``error`` ``Cancelled``.
        """
        ...

    def counts(self, *, owner: str | None = None) -> dict[Status, int]:
        """How many jobs (of ``owner`` only, if given) are in each status; every status is a
        key, even at 0."""
        ...

    def active_by_model(self) -> dict[tuple[str, Status], int]:
        """How many jobs are ``queued`` and ``generating``, by (model, status); pairs at 0 are
        left out. Deleted jobs count while they run (a deleted queued job is ended)."""
        ...

    def events_after(
        self, after: int, *, limit: int = 100, job_id: str | None = None
    ) -> builtins.list[JobEvent]:
        """Events with ``id`` > ``after``, oldest first, at most ``limit`` (one job's with
        ``job_id``). Cheap: an index scan from ``after``."""
        ...

    def last_event_id(self) -> int:
        """The largest event id appended so far (0 for an empty log): where a reader that
        wants only what comes next starts. Cheap: the primary key's last entry."""
        ...

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from another thread) when a job may have been queued anywhere.

        A hint to wake idle workers early, not a guarantee: a store may call it spuriously
        or never (SQLite's workers poll), so workers still poll, only less often.
        """
        ...

    def on_event(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from another thread) when events may have been appended
        anywhere; a hint, like ``on_new_work`` (readers still poll ``events_after``)."""
        ...


class JobArchive(Protocol):
    """Ended jobs and their files: what retention uses."""

    def finished_before(self, cutoff: float, *, limit: int) -> list[Job]:
        """Up to ``limit`` ended, not yet purged jobs that finished before ``cutoff``, oldest
        first."""
        ...

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        """Which of the input-image ``keys`` a job neither purged nor deleted, other than the
        jobs ``excluding``, still refers to."""
        ...

    def mark_purged(self, job_ids: Collection[str]) -> None:
        """Record that the jobs' files are gone (``purged_at``) and drop their events and
        webhook deliveries (with their attempts)."""
        ...

    def prune_events(self) -> int:
        """Drop the ``progress`` events of jobs that ended over ``PROGRESS_EVENTS_KEPT_SECONDS``
        ago; how many went. Also drops idempotency keys past ``IDEMPOTENCY_SECONDS`` (up to
        ``PRUNE_BATCH`` a call; older ones are ignored until then)."""
        ...


class KeyStore(Protocol):
    """API keys, by hash."""

    def add_key(
        self,
        *,
        name: str,
        key_hash: str,
        prefix: str,
        limits: KeyLimits = NO_LIMITS,
        priority: Priority = Priority.NORMAL,
    ) -> ApiKey:
        """Store a new API key by its hash, with its own ``limits`` and ``priority``, and
        return it.

        The store never sees a plaintext key; hashing is the caller's job. A hash already
        stored is refused by the database's unique constraint.
        """
        ...

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash; None if unknown or revoked."""
        ...

    def key_revoked(self, key_hash: str) -> bool:
        """Whether a key with this hash was stored and then revoked."""
        ...

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    def set_key_priority(self, key_id_or_prefix: str, priority: Priority) -> bool:
        """Set the priority of the active key with this id or display prefix: False if no
        active key matches; ``ValueError``, changing nothing, if a prefix matches several."""
        ...

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        """Revoke the active key with this id or display prefix.

        False if no active key matches. Raises ``ValueError``, revoking nothing, if a prefix
        matches several active keys.
        """
        ...

    def set_key_limits(self, key_id_or_prefix: str, limits: KeyLimits) -> ApiKey | None:
        """Set the limits given (not None) of the active key with this id or display prefix,
        keeping the others; the key as updated, None if no active key matches. Raises
        ``ValueError``, changing nothing, if a prefix matches several active keys."""
        ...


class Coordination(Protocol):
    """What processes tell each other: worker readiness and named leases."""

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        """A worker with ``models`` loaded is alive now (its readiness, for ``/readyz``)."""
        ...

    def ready_models(self, *, within: float) -> set[str]:
        """Models some worker reported loaded in the last ``within`` seconds."""
        ...

    def outlook(self, model: str, *, within: float) -> ModelOutlook:
        """``model``'s queue now, its pace, and its workers (those that reported in the last
        ``within`` seconds or hold a lease). The order approximates the fair claim's: by key
        priority, then in rounds (each key's oldest queued job, then each key's second, ...),
        within a round oldest first; it ignores which keys run jobs now and retry delays.
        Cost: one read of the model's queued jobs."""
        ...

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        """Hold the named lease ``name`` (a periodic task one worker runs at a time) for
        ``seconds``: True if it was free, expired, or already ``holder``'s."""
        ...

    def deployment_value(self, name: str, proposed: str) -> str:
        """The value every process on this database agrees on for ``name`` (e.g. where the
        videos are): ``proposed`` if none was stored yet (it is stored), else the stored one."""
        ...


class Store(JobQueue, JobArchive, KeyStore, Coordination, IdempotencyStore, Outbox, Protocol):
    """One backend implements every interface on one database; callers take the part they
    need."""

    def close(self) -> None:
        """Release the store's connections; the store is unusable afterwards."""
        ...
