"""The PostgreSQL job store: one database shared by API processes and workers on many machines.

Concurrency model: each ``PostgresJobStore`` owns a pool of connections (thread-safe; open
one store per process, after any fork). Every method is one short transaction on one
pooled connection, never held while a job runs. Claims take turns (each first takes the
event log's lock, which its ``started`` event needs anyway), so each sees the running jobs
of the claims before it and the fair order (``_FAIR_TURNS``) is exact; the picked job is
locked with ``FOR UPDATE SKIP LOCKED`` (if another writer, a cancel in flight, holds it,
the claim takes the next unheld job in the fair order instead), and the expired-lease pass
skips rows another transaction holds. The store does not create its schema: ``reelforge db
upgrade`` (``jobs.migrate``) does, and the store refuses a schema older or newer than the
code's.

Time: every time the store writes or compares is ``reelforge_now(%(now)s)`` (migration
0005): the database's ``now()`` when ``now`` is NULL, which it is unless a clock was
injected (tests). One clock for every machine: skew cannot hand a live lease to another.

The event log: a transaction that appends events first takes ``EVENTS_LOCK_KEY`` (an
advisory lock held to its commit), so event ids are in commit order and a reader polling
"after id N" never skips an event that commits late.

Notifications (``listener.py``): a job becoming ``queued`` sends ``NOTIFY`` on the jobs
channel (payload: its model), appended events on the events channel, both delivered at
commit; ``on_new_work`` and ``on_event`` share one listening connection.

The URL may carry ``options=-c search_path=...`` to keep the tables in their own schema;
the channels are then that schema's (see ``listener.py``).
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Final

try:
    import psycopg
    from psycopg.rows import DictRow, dict_row
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the PostgreSQL job store needs: pip install 'reelforge[postgres]'") from exc

from reelforge.contract import Status
from reelforge.jobs import base, migrate, postgres_admission
from reelforge.jobs.admission import Admission, Reservation
from reelforge.jobs.base import Ending, StoreBase
from reelforge.jobs.listener import EVENTS_CHANNEL, JOBS_CHANNEL, Listener, channel
from reelforge.jobs.model import (
    DEFAULT_DIALECT,
    NO_LIMITS,
    PACE_WEIGHT,
    PROGRESS_EVENT_SECONDS,
    PROGRESS_EVENTS_KEPT_SECONDS,
    ApiKey,
    Completed,
    EventKind,
    Job,
    JobEvent,
    KeyLimits,
    Lease,
    ListOrder,
    ModelOutlook,
    Outcome,
    Phase,
    Priority,
)
from reelforge.jobs.postgres_outbox import PostgresOutbox
from reelforge.request import JobRequest
from reelforge.retry import retrying

POOL_TIMEOUT_S: Final = 10.0
"""Longest wait for a pooled connection (or a first connection) before failing, seconds."""
EVENTS_LOCK_KEY: Final = 0x7266_6576_656E_7473
"""``pg_advisory_xact_lock`` key an event-appending transaction holds (ASCII "rfevents")."""

PgConnection = psycopg.Connection[DictRow]


def _checked_schema(url: str) -> str:
    """The schema ``url``'s connections use, once ``migrate.require_current`` accepts it;
    connection failures are tried again with backoff for up to ``POOL_TIMEOUT_S``."""

    def check() -> str:
        with psycopg.connect(url, connect_timeout=int(POOL_TIMEOUT_S)) as conn:
            migrate.require_current(conn)
            row = conn.execute("SELECT current_schema()").fetchone()
        return "public" if row is None or row[0] is None else str(row[0])

    return retrying(
        check,
        retry_on=lambda exc: isinstance(exc, psycopg.OperationalError),
        seconds=POOL_TIMEOUT_S,
        pause=0.05,
        max_pause=1.0,
    )


class PostgresJobStore(StoreBase, PostgresOutbox):
    """A ``Store`` on PostgreSQL (see the module docstring for threads, time and events)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        min_size: int = 1,
        max_size: int = 8,
        key_max_running: int | None = None,
    ) -> None:
        """Connect to the database at ``url`` (a URL or conninfo string). Times are the
        database's unless ``clock`` is given. ``key_max_running`` is the claim's limit for
        keys without their own ``max_running`` (None: none).

        Raises ``RuntimeError`` if the schema is missing, older than this code's (run
        ``reelforge db upgrade``) or newer; ``psycopg.OperationalError`` if the database
        cannot be reached for ``POOL_TIMEOUT_S`` (a connection lost while starting is tried
        again, as the pool would: a worker restarted during a blip starts).
        """
        schema = _checked_schema(url)
        self._jobs_channel = channel(JOBS_CHANNEL, schema)
        self._events_channel = channel(EVENTS_CHANNEL, schema)
        self._url = url
        self._clock = clock
        self._key_max_running = key_max_running
        self._pid = os.getpid()
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            connection_class=PgConnection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT_S,
            name="reelforge-jobs",
            open=True,
        )
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False

    def _now(self) -> float | None:
        """The injected clock's time, or None: ``reelforge_now`` then reads the database's."""
        return None if self._clock is None else self._clock()

    @contextmanager
    def _connection(self) -> Iterator[PgConnection]:
        """A pooled autocommit connection: each statement commits unless in ``transaction``."""
        if os.getpid() != self._pid:
            raise RuntimeError(
                "PostgresJobStore was opened in another process; open one per process"
            )
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _transaction(self) -> Iterator[PgConnection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    # --- the queue ------------------------------------------------------------------------

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
        params = self._new_job(
            owner=owner,
            model=model,
            request=request,
            max_attempts=max_attempts,
            dialect=dialect,
            callback_url=callback_url,
            lora=lora,
            now=self._now(),
        )
        try:
            with self._transaction() as conn:
                if admission is not None and admission.check is not None:
                    admission.check(postgres_admission.usage(conn, owner, params["now"]))
                row = _one(
                    conn.execute(
                        """
                        INSERT INTO jobs (id, owner, model, request, status, progress, attempts,
                                          max_attempts, meta, created_at, updated_at, dialect,
                                          callback_url, lora)
                        VALUES (%(id)s, %(owner)s, %(model)s, %(request)s::jsonb, 'queued', 0,
                                0, %(max_attempts)s, '{}', reelforge_now(%(now)s),
                                reelforge_now(%(now)s), %(dialect)s, %(callback_url)s, %(lora)s)
                        RETURNING *
                        """,
                        params,
                    ).fetchone()
                )
                with conn.cursor() as cursor:
                    cursor.executemany(
                        """
                        INSERT INTO job_inputs (job_id, key) VALUES (%s, %s)
                        ON CONFLICT DO NOTHING
                        """,
                        [(row["id"], key) for key in request.input_keys],
                    )
                self._queued(conn, [row], EventKind.QUEUED, {})
                if admission is not None and admission.idempotency_key is not None:
                    key = admission.idempotency_key
                    postgres_admission.bind(conn, owner=owner, key=key, job_id=row["id"])
        except psycopg.errors.UntranslatableCharacter as exc:
            raise ValueError(f"request cannot be stored in PostgreSQL's jsonb: {exc}") from exc
        return base.job_from_row(row)

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        with self._connection() as conn:
            row = conn.execute(
                """
                SELECT * FROM jobs
                WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
                  AND deleted_at IS NULL
                """,
                {"id": job_id, "owner": owner},
            ).fetchone()
        return None if row is None else base.job_from_row(row)

    def list(
        self, *, owner: str, limit: int, after: str | None = None, order: ListOrder = "desc"
    ) -> list[Job]:
        past, direction = self._list_direction(limit, order)
        with self._connection() as conn:
            rows = conn.execute(
                f"""
                SELECT * FROM jobs
                WHERE owner = %(owner)s AND deleted_at IS NULL
                  AND (%(after)s::text IS NULL OR (created_at, id) {past} (
                      SELECT created_at, id FROM jobs
                      WHERE id = %(after)s::text AND owner = %(owner)s))
                ORDER BY created_at {direction}, id {direction}
                LIMIT %(limit)s
                """,  # noqa: S608 (``past`` and ``direction`` are base.LIST_DIRECTIONS' constants)
                {"owner": owner, "after": after, "limit": limit},
            ).fetchall()
        return [base.job_from_row(row) for row in rows]

    def claim(
        self, *, worker_id: str, lease_seconds: float, models: Collection[str] | None = None
    ) -> Lease | None:
        self._check_lease(lease_seconds)
        token = secrets.token_hex(16)
        params = {
            "token": token,
            "lease_seconds": lease_seconds,
            "worker_id": worker_id,
            "now": self._now(),
            "models": None if models is None else sorted(models),
            "max_running": self._key_max_running,
        }
        with self._transaction() as conn:
            # Claims take turns (the event log's lock, which the claim's event needs anyway,
            # taken first): each sees the running jobs of the claims before it, so turns are
            # exact. SKIP LOCKED passes over a job another writer (a cancel) holds.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK_KEY,))
            self._settle_expired(conn)
            row = conn.execute(
                _FAIR_TURNS  # noqa: S608 (a constant of this module)
                + """,
                picked AS MATERIALIZED (
                    SELECT jobs.id FROM jobs
                    WHERE jobs.status = 'queued' AND jobs.id = (
                        SELECT turns.id FROM turns
                        WHERE turns.running < turns.max_running
                        ORDER BY turns.rank, turns.running, turns.served_at NULLS FIRST,
                                 turns.created_at, turns.id
                        LIMIT 1
                    )
                    FOR UPDATE SKIP LOCKED
                ),
                -- Only if that job is held by another writer: the fair order over all the
                -- keys' claimable jobs (a sort of them all), passing over held ones.
                instead AS MATERIALIZED (
                    SELECT jobs.id FROM jobs JOIN turns ON turns.owner = jobs.owner
                    WHERE NOT EXISTS (SELECT 1 FROM picked) AND jobs.status = 'queued'
                      AND turns.running < turns.max_running
                      AND (jobs.run_after IS NULL OR jobs.run_after <= reelforge_now(%(now)s))
                      AND (%(models)s::text[] IS NULL OR jobs.model = ANY(%(models)s::text[]))
                    ORDER BY turns.rank, turns.running, turns.served_at NULLS FIRST,
                             jobs.created_at, jobs.id
                    LIMIT 1
                    FOR UPDATE OF jobs SKIP LOCKED
                )
                UPDATE jobs
                SET status = 'generating', lease_token = %(token)s,
                    lease_expires_at = reelforge_now(%(now)s) + %(lease_seconds)s,
                    attempts = jobs.attempts + 1, worker_id = %(worker_id)s, progress = 0,
                    phase = 'preparing',
                    started_at = COALESCE(jobs.started_at, reelforge_now(%(now)s)),
                    updated_at = reelforge_now(%(now)s)
                WHERE jobs.id IN (SELECT id FROM picked UNION ALL SELECT id FROM instead)
                RETURNING jobs.*
                """,
                params,
            ).fetchone()
            if row is not None:
                self._append(conn, [row], EventKind.STARTED, {"attempts": row["attempts"]})
        return None if row is None else Lease(job=base.job_from_row(row), token=token)

    def heartbeat(
        self,
        lease: Lease,
        *,
        lease_seconds: float,
        progress: int | None = None,
        phase: Phase | None = None,
    ) -> bool:
        self._check_lease(lease_seconds)
        self._check_progress(progress)
        params = {
            "lease_seconds": lease_seconds,
            "progress": progress,
            "phase": None if phase is None else phase.value,
            "now": self._now(),
        }
        with self._transaction() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET lease_expires_at = reelforge_now(%(now)s) + %(lease_seconds)s,
                    progress = COALESCE(%(progress)s::integer, progress),
                    phase = COALESCE(%(phase)s::text, phase), updated_at = reelforge_now(%(now)s)
                WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            for row in rows:
                self._note_progress(conn, row)
        return bool(rows)

    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        with self._transaction() as conn:
            ended = self._end(
                conn,
                base.ending_of(outcome),
                where="id = %(id)s AND status = 'generating' AND lease_token = %(token)s",
                lease=lease,
            )
            if isinstance(outcome, Completed):
                for row in ended:
                    _note_pace(conn, row)
        return bool(ended)

    def _back_to_queue(
        self, lease: Lease, *, delay_seconds: float, retried: bool, reason: str
    ) -> bool:
        """``release``/``requeue``: queued again, the attempt not charged; a job its client
        asked to cancel ends ``Cancelled`` instead (the flag is never unset, so whichever
        UPDATE fails, the other decides)."""
        params = {"now": self._now(), "delay": delay_seconds, "retried": int(retried)}
        with self._transaction() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1,
                    retries = retries + %(retried)s,
                    run_after = reelforge_now(%(now)s) + %(delay)s, progress = 0, phase = NULL,
                    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                    updated_at = reelforge_now(%(now)s)
                WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            if rows:
                self._queued(conn, rows, EventKind.REQUEUED, {"reason": reason})
            else:
                rows = self._end(
                    conn,
                    base.cancelled(),
                    where="id = %(id)s AND status = 'generating' AND lease_token = %(token)s"
                    " AND cancel_requested_at IS NOT NULL",
                    lease=lease,
                )
        return bool(rows)

    def set_upstream(self, lease: Lease, upstream_id: str) -> bool:
        params = {"upstream_id": upstream_id, "now": self._now()}
        with self._transaction() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs SET upstream_id = %(upstream_id)s, updated_at = reelforge_now(%(now)s)
                WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
                RETURNING id
                """,
                lease,
                params,
            )
        return bool(rows)

    def fall_back(self, lease: Lease, *, model: str, reason: str) -> bool:
        params = {"model": model, "now": self._now()}
        with self._transaction() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET status = 'queued', model = %(model)s, upstream_id = NULL,
                    attempts = attempts - 1, run_after = NULL, progress = 0, phase = NULL,
                    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                    updated_at = reelforge_now(%(now)s)
                WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            if rows:
                self._queued(conn, rows, EventKind.REQUEUED, {"reason": reason, "model": model})
            else:
                rows = self._end(
                    conn,
                    base.cancelled(),
                    where="id = %(id)s AND status = 'generating' AND lease_token = %(token)s"
                    " AND cancel_requested_at IS NOT NULL",
                    lease=lease,
                )
        return bool(rows)

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._now()}
        with self._transaction() as conn:
            self._cancel(conn, params)
            row = conn.execute(
                """
                SELECT * FROM jobs
                WHERE id = %(id)s AND owner = %(owner)s AND deleted_at IS NULL
                """,
                params,
            ).fetchone()
        return None if row is None else base.job_from_row(row)

    def delete(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._now()}
        with self._transaction() as conn:
            self._cancel(conn, params)
            rows = conn.execute(
                """
                UPDATE jobs
                SET deleted_at = reelforge_now(%(now)s), updated_at = reelforge_now(%(now)s)
                WHERE id = %(id)s AND owner = %(owner)s AND deleted_at IS NULL
                RETURNING *
                """,
                params,
            ).fetchall()
            self._append(conn, rows, EventKind.DELETED, {})
        return base.job_from_row(rows[0]) if rows else None

    def _cancel(self, conn: PgConnection, params: Mapping[str, Any]) -> None:
        """The client's cancel of job ``id`` of ``owner``, in the caller's transaction: a
        queued job ends ``Cancelled``, a generating one is marked."""
        self._end(
            conn,
            base.cancelled(),
            where="id = %(id)s AND owner = %(owner)s AND status = 'queued' AND deleted_at IS NULL",
            params=params,
        )
        conn.execute(
            """
            UPDATE jobs
            SET cancel_requested_at = reelforge_now(%(now)s),
                updated_at = reelforge_now(%(now)s)
            WHERE id = %(id)s AND owner = %(owner)s AND status = 'generating'
              AND cancel_requested_at IS NULL AND deleted_at IS NULL
            """,
            params,
        )

    def settle_expired(self) -> int:
        with self._transaction() as conn:
            return self._settle_expired(conn)

    def _settle_expired(self, conn: PgConnection) -> int:
        """The expired-lease pass, inside the caller's transaction; returns jobs moved.

        Rows another transaction holds (a heartbeat in flight, another settler) are skipped.
        """
        expired = conn.execute(
            """
            SELECT id, attempts, max_attempts, cancel_requested_at FROM jobs
            WHERE status = 'generating' AND lease_expires_at < reelforge_now(%(now)s)
            FOR UPDATE SKIP LOCKED
            """,
            {"now": self._now()},
        ).fetchall()
        for job in expired:
            params = {"id": job["id"], "now": self._now()}
            if job["cancel_requested_at"] is None and job["attempts"] < job["max_attempts"]:
                row = conn.execute(
                    """
                    UPDATE jobs
                    SET status = 'queued', progress = 0, phase = NULL, lease_token = NULL,
                        lease_expires_at = NULL, worker_id = NULL,
                        updated_at = reelforge_now(%(now)s)
                    WHERE id = %(id)s AND status = 'generating'
                    RETURNING *
                    """,
                    params,
                ).fetchone()
                self._queued(conn, [_one(row)], EventKind.REQUEUED, {"reason": "lease expired"})
                continue
            ending = base.worker_lost(job["attempts"])
            if job["cancel_requested_at"] is not None:
                ending = base.cancelled()
            self._end(conn, ending, where="id = %(id)s AND status = 'generating'", params=params)
        return len(expired)

    def _end(
        self,
        conn: PgConnection,
        ending: Ending,
        *,
        where: str,
        params: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> builtins.list[DictRow]:
        """Every terminal transition: end the jobs matching ``where`` (one of this module's
        conditions, on ``id``/``token`` through ``_update_leased`` if ``lease`` is given)
        as ``ending`` says, appending its event for each; the rows ended."""
        query = f"""
            UPDATE jobs
            SET status = %(status)s,
                progress = CASE WHEN %(status)s = 'completed' THEN 100 ELSE progress END,
                error_name = %(error_name)s, error_message = %(error_message)s,
                video_key = %(video_key)s,
                credits_used = COALESCE(%(credits_used)s::double precision, credits_used),
                meta = COALESCE(%(meta)s::jsonb, meta), lease_token = NULL,
                lease_expires_at = NULL, phase = NULL, finished_at = reelforge_now(%(now)s),
                updated_at = reelforge_now(%(now)s)
            WHERE {where}
            RETURNING *
            """  # noqa: S608 (``where`` is one of this module's constant conditions)
        bound = {"now": self._now(), **(params or {}), **ending.params()}
        if lease is None:
            rows = conn.execute(query, bound).fetchall()
        else:
            rows = self._update_leased(conn, query, lease, bound)
        self._append(conn, rows, ending.kind, ending.data)
        return rows

    def _update_leased(
        self, conn: PgConnection, query: str, lease: Lease, params: Mapping[str, Any]
    ) -> builtins.list[DictRow]:
        """Run an UPDATE ... RETURNING conditional on ``id``/``token`` (every statement that
        acts on a lease goes through here); the rows it changed."""
        return conn.execute(query, {**params, "id": lease.job.id, "token": lease.token}).fetchall()

    def _queued(
        self,
        conn: PgConnection,
        rows: builtins.list[DictRow],
        kind: EventKind,
        data: Mapping[str, Any],
    ) -> None:
        """Append the events of jobs that became ``queued`` and wake idle workers."""
        self._append(conn, rows, kind, data)
        for row in rows:
            conn.execute("SELECT pg_notify(%s, %s)", (self._jobs_channel, row["model"]))

    def _append(
        self,
        conn: PgConnection,
        rows: builtins.list[DictRow],
        kind: EventKind,
        data: Mapping[str, Any],
    ) -> None:
        """Append one event per row (the jobs after the change), in the caller's transaction,
        taking the events' turn first (see the module docstring)."""
        if not rows:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK_KEY,))
        with conn.cursor() as cursor:
            cursor.executemany(
                """
                INSERT INTO job_events (job_id, owner, kind, status, progress, phase,
                                        created_at, data)
                VALUES (%(job_id)s, %(owner)s, %(kind)s, %(status)s, %(progress)s, %(phase)s,
                        %(created_at)s, %(data)s::jsonb)
                """,
                [base.event_params(row, kind, data) for row in rows],
            )
        conn.execute("SELECT pg_notify(%s, '')", (self._events_channel,))

    def _note_progress(self, conn: PgConnection, row: DictRow) -> None:
        """Append a ``progress`` event after a heartbeat that left ``row``: always when the
        phase differs from the job's last event's, else when the progress differs and the
        job's last progress event is ``PROGRESS_EVENT_SECONDS`` old or more."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK_KEY,))
        appended = conn.execute(
            """
            WITH last AS (
                SELECT progress, phase FROM job_events
                WHERE job_id = %(job_id)s ORDER BY id DESC LIMIT 1
            )
            INSERT INTO job_events (job_id, owner, kind, status, progress, phase, created_at,
                                    data)
            SELECT %(job_id)s, %(owner)s, %(kind)s, %(status)s, %(progress)s, %(phase)s,
                   %(created_at)s, %(data)s::jsonb
            WHERE NOT EXISTS (
                SELECT 1 FROM last
                WHERE last.phase IS NOT DISTINCT FROM %(phase)s::text
                  AND (last.progress = %(progress)s OR EXISTS (
                      SELECT 1 FROM job_events
                      WHERE job_id = %(job_id)s AND kind = 'progress'
                        AND created_at > %(created_at)s - %(gap)s))
            )
            """,
            {
                **base.event_params(row, EventKind.PROGRESS, {}),
                "gap": PROGRESS_EVENT_SECONDS,
            },
        ).rowcount
        if appended:
            conn.execute("SELECT pg_notify(%s, '')", (self._events_channel,))

    def counts(self, *, owner: str | None = None) -> dict[Status, int]:
        with self._connection() as conn:
            if owner is None:
                rows = conn.execute(
                    "SELECT status, count(*) AS n FROM jobs GROUP BY status"
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT status, count(*) AS n FROM jobs WHERE owner = %s GROUP BY status",
                    (owner,),
                ).fetchall()
        found = {Status(row["status"]): int(row["n"]) for row in rows}
        return {status: found.get(status, 0) for status in Status}

    def active_by_model(self) -> dict[tuple[str, Status], int]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT model, status, count(*) AS n FROM jobs"
                " WHERE status IN ('queued', 'generating') GROUP BY model, status"
            ).fetchall()
        return {(row["model"], Status(row["status"])): int(row["n"]) for row in rows}

    def events_after(
        self, after: int, *, limit: int = 100, job_id: str | None = None
    ) -> builtins.list[JobEvent]:
        self._check_limit(limit)
        with self._connection() as conn:
            if job_id is None:
                rows = conn.execute(
                    "SELECT * FROM job_events WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
                ).fetchall()
            else:
                rows = conn.execute(
                    """
                    SELECT * FROM job_events WHERE job_id = %s AND id > %s
                    ORDER BY id LIMIT %s
                    """,
                    (job_id, after, limit),
                ).fetchall()
        return [base.event_from_row(row) for row in rows]

    def last_event_id(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) AS last FROM job_events").fetchone()
        return 0 if row is None else int(row["last"])

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the listener thread) whenever a job may have been queued
        (see ``listener.Listener`` for when and how)."""
        self._listen(self._jobs_channel, callback)

    def on_event(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the listener thread) whenever events may have been
        appended (see ``listener.Listener``)."""
        self._listen(self._events_channel, callback)

    def _listen(self, name: str, callback: Callable[[], None]) -> None:
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._listener is None:
                channels = [self._jobs_channel, self._events_channel]
                self._listener = Listener(self._url, channels)
                self._listener.add(name, callback)
                self._listener.start()
            else:
                self._listener.add(name, callback)

    # --- the archive ----------------------------------------------------------------------

    def finished_before(self, cutoff: float, *, limit: int) -> builtins.list[Job]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT * FROM jobs
                WHERE finished_at IS NOT NULL AND purged_at IS NULL AND finished_at < %s
                ORDER BY finished_at LIMIT %s
                """,
                (cutoff, limit),
            ).fetchall()
        return [base.job_from_row(row) for row in rows]

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT DISTINCT job_inputs.key FROM job_inputs
                JOIN jobs ON jobs.id = job_inputs.job_id
                WHERE job_inputs.key = ANY(%(keys)s::text[])
                  AND NOT (job_inputs.job_id = ANY(%(excluding)s::text[]))
                  AND jobs.purged_at IS NULL AND jobs.deleted_at IS NULL
                """,
                {"keys": sorted(keys), "excluding": sorted(excluding)},
            ).fetchall()
        return {row["key"] for row in rows}

    def mark_purged(self, job_ids: Collection[str]) -> None:
        params = {"ids": sorted(job_ids), "now": self._now()}
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET purged_at = reelforge_now(%(now)s) WHERE id = ANY(%(ids)s)",
                params,
            )
            conn.execute("DELETE FROM job_events WHERE job_id = ANY(%(ids)s)", params)
            conn.execute("DELETE FROM job_inputs WHERE job_id = ANY(%(ids)s)", params)
            self._drop_deliveries(conn, sorted(job_ids))

    def prune_events(self) -> int:
        params = {
            "now": self._now(),
            "kept": PROGRESS_EVENTS_KEPT_SECONDS,
            "batch": base.PRUNE_BATCH,
        }
        with self._connection() as conn:
            postgres_admission.prune(conn, params["now"])
            return conn.execute(
                """
                DELETE FROM job_events WHERE id IN (
                    SELECT job_events.id FROM job_events
                    JOIN jobs ON jobs.id = job_events.job_id
                    WHERE job_events.kind = 'progress'
                      AND jobs.finished_at < reelforge_now(%(now)s) - %(kept)s
                    LIMIT %(batch)s
                )
                """,
                params,
            ).rowcount

    # --- keys -----------------------------------------------------------------------------

    def add_key(
        self,
        *,
        name: str,
        key_hash: str,
        prefix: str,
        limits: KeyLimits = NO_LIMITS,
        priority: Priority = Priority.NORMAL,
    ) -> ApiKey:
        params = base.new_key_row(
            name=name, key_hash=key_hash, prefix=prefix, limits=limits, priority=priority
        )
        with self._connection() as conn:
            row = conn.execute(
                """
                INSERT INTO api_keys (id, name, key_hash, prefix, created_at, rpm, max_queued,
                                      max_running, daily_video_seconds, priority)
                VALUES (%(id)s, %(name)s, %(key_hash)s, %(prefix)s, reelforge_now(%(now)s),
                        %(rpm)s, %(max_queued)s, %(max_running)s, %(daily_video_seconds)s,
                        %(priority)s)
                RETURNING id, name, created_at, revoked_at, prefix, rpm, max_queued,
                          max_running, daily_video_seconds, priority
                """,
                {**params, "now": self._now()},
            ).fetchone()
        return base.key_from_row(_one(row))

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        with self._connection() as conn:
            row = conn.execute(
                """
                SELECT id, name, created_at, revoked_at, prefix, rpm, max_queued, max_running,
                       daily_video_seconds, priority
                FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL
                """,
                (key_hash,),
            ).fetchone()
        return None if row is None else base.key_from_row(row)

    def key_revoked(self, key_hash: str) -> bool:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM api_keys WHERE key_hash = %s AND revoked_at IS NOT NULL",
                (key_hash,),
            ).fetchone()
        return row is not None

    def list_keys(self) -> builtins.list[ApiKey]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT id, name, created_at, revoked_at, prefix, rpm, max_queued, max_running,
                       daily_video_seconds, priority
                FROM api_keys ORDER BY created_at, id
                """
            ).fetchall()
        return [base.key_from_row(row) for row in rows]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        with self._transaction() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            if ids:
                conn.execute(
                    "UPDATE api_keys SET revoked_at = reelforge_now(%s) WHERE id = %s",
                    (self._now(), ids[0]),
                )
        return len(ids) == 1

    def set_key_priority(self, key_id_or_prefix: str, priority: Priority) -> bool:
        with self._transaction() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            if ids:
                conn.execute(
                    "UPDATE api_keys SET priority = %s WHERE id = %s",
                    (Priority(priority).value, ids[0]),
                )
        return len(ids) == 1

    def set_key_limits(self, key_id_or_prefix: str, limits: KeyLimits) -> ApiKey | None:
        with self._transaction() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            row = conn.execute(
                """
                UPDATE api_keys
                SET rpm = COALESCE(%(rpm)s, rpm),
                    max_queued = COALESCE(%(max_queued)s, max_queued),
                    max_running = COALESCE(%(max_running)s, max_running),
                    daily_video_seconds = COALESCE(%(daily_video_seconds)s, daily_video_seconds)
                WHERE id = %(id)s
                RETURNING id, name, created_at, revoked_at, prefix, rpm, max_queued,
                          max_running, daily_video_seconds, priority
                """,
                {**asdict(limits), "id": ids[0] if ids else None},
            ).fetchone()
        return None if row is None else base.key_from_row(row)

    def _active_key_ids(self, conn: PgConnection, key_id_or_prefix: str) -> builtins.list[str]:
        """The id of the active key with this id or prefix (none or one), locked; ``ValueError``
        if a prefix matches several."""
        ids = conn.execute(
            """
            SELECT id FROM api_keys
            WHERE (id = %(needle)s OR prefix = %(needle)s) AND revoked_at IS NULL
            FOR UPDATE
            """,
            {"needle": key_id_or_prefix},
        ).fetchall()
        if len(ids) > 1:
            raise ValueError(f"{key_id_or_prefix!r} matches {len(ids)} active keys; use its id")
        return [row["id"] for row in ids]

    # --- idempotency keys -----------------------------------------------------------------

    def reserve_idempotency(self, *, owner: str, key: str, fingerprint: str) -> Reservation | None:
        with self._transaction() as conn:
            return postgres_admission.reserve(
                conn, owner=owner, key=key, fingerprint=fingerprint, now=self._now()
            )

    def abandon_idempotency(self, *, owner: str, key: str) -> None:
        with self._connection() as conn:
            postgres_admission.abandon(conn, owner=owner, key=key)

    # --- coordination ---------------------------------------------------------------------

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        with self._connection() as conn:
            conn.execute(
                """
                INSERT INTO workers (id, models, seen_at)
                VALUES (%(id)s, %(models)s::jsonb, reelforge_now(%(now)s))
                ON CONFLICT (id) DO UPDATE
                    SET models = EXCLUDED.models, seen_at = EXCLUDED.seen_at
                """,
                {"id": worker_id, "models": json.dumps(sorted(models)), "now": self._now()},
            )

    def ready_models(self, *, within: float) -> set[str]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT DISTINCT jsonb_array_elements_text(models) AS model FROM workers
                WHERE seen_at >= reelforge_now(%(now)s) - %(within)s
                """,
                {"now": self._now(), "within": within},
            ).fetchall()
        return {row["model"] for row in rows}

    def outlook(self, model: str, *, within: float) -> ModelOutlook:
        params = {"model": model, "within": within, "now": self._now()}
        with self._connection() as conn:
            row = _one(
                conn.execute(
                    """
                    SELECT reelforge_now(%(now)s) AS now,
                        ARRAY(
                            SELECT queued.id FROM (
                                SELECT jobs.id, jobs.created_at,
                                    CASE api_keys.priority WHEN 'high' THEN 0
                                        WHEN 'low' THEN 2 ELSE 1 END AS rank,
                                    ROW_NUMBER() OVER (
                                        PARTITION BY jobs.owner ORDER BY jobs.created_at, jobs.id
                                    ) AS round
                                FROM jobs LEFT JOIN api_keys ON api_keys.id = jobs.owner
                                WHERE jobs.status = 'queued' AND jobs.model = %(model)s
                            ) AS queued
                            ORDER BY queued.rank, queued.round, queued.created_at, queued.id
                        ) AS queued_order,
                        (SELECT mean_seconds FROM model_pace WHERE model = %(model)s) AS pace,
                        (SELECT COUNT(*) FROM workers
                         WHERE models ? %(model)s
                           AND (seen_at >= reelforge_now(%(now)s) - %(within)s OR id IN (
                               SELECT worker_id FROM jobs WHERE status = 'generating'))
                        ) AS workers,
                        ARRAY(
                            SELECT started_at FROM jobs
                            WHERE status = 'generating' AND model = %(model)s
                            ORDER BY started_at
                        ) AS running_since
                    """,
                    params,
                ).fetchone()
            )
        return ModelOutlook(
            order=tuple(row["queued_order"]),
            generation_seconds=row["pace"],
            workers=row["workers"],
            running_since=tuple(row["running_since"]),
            now=row["now"],
        )

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        with self._connection() as conn:
            row = conn.execute(
                """
                INSERT INTO chores (name, holder, expires_at)
                VALUES (%(name)s, %(holder)s, reelforge_now(%(now)s) + %(seconds)s)
                ON CONFLICT (name) DO UPDATE
                    SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                    WHERE chores.expires_at < reelforge_now(%(now)s)
                       OR chores.holder = EXCLUDED.holder
                RETURNING name
                """,
                {"name": name, "holder": holder, "seconds": seconds, "now": self._now()},
            ).fetchone()
        return row is not None

    def deployment_value(self, name: str, proposed: str) -> str:
        with self._connection() as conn:
            conn.execute(
                """
                INSERT INTO deployment (name, value) VALUES (%s, %s)
                ON CONFLICT (name) DO NOTHING
                """,
                (name, proposed),
            )
            row = _one(
                conn.execute("SELECT value FROM deployment WHERE name = %s", (name,)).fetchone()
            )
        return str(row["value"])

    def close(self) -> None:
        with self._listener_lock:
            self._closed = True
            if self._listener is not None:
                self._listener.stop()
        self._pool.close()


_FAIR_TURNS: Final = """
    WITH RECURSIVE owners (owner) AS (
        SELECT MIN(owner) FROM jobs WHERE status = 'queued'
        UNION ALL
        SELECT (SELECT MIN(jobs.owner) FROM jobs
                WHERE jobs.status = 'queued' AND jobs.owner > owners.owner)
        FROM owners WHERE owners.owner IS NOT NULL
    ),
    turns AS MATERIALIZED (
        SELECT owners.owner, first.id, first.created_at,
            COALESCE((SELECT CASE priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END
                      FROM api_keys WHERE api_keys.id = owners.owner), 1) AS rank,
            (SELECT COUNT(*) FROM jobs
             WHERE jobs.status = 'generating' AND jobs.owner = owners.owner) AS running,
            -- Admission: its max_running limit (its own, else the default %(max_running)s;
            -- neither: no limit); the claim skips a key at it.
            COALESCE((SELECT max_running FROM api_keys WHERE api_keys.id = owners.owner),
                     %(max_running)s::integer, 2147483647) AS max_running,
            (SELECT MAX(jobs.started_at) FROM jobs
             WHERE jobs.owner = owners.owner AND jobs.started_at IS NOT NULL) AS served_at
        FROM owners CROSS JOIN LATERAL (
            SELECT jobs.id, jobs.created_at FROM jobs
            WHERE jobs.status = 'queued' AND jobs.owner = owners.owner
              AND (jobs.run_after IS NULL OR jobs.run_after <= reelforge_now(%(now)s))
              AND (%(models)s::text[] IS NULL OR jobs.model = ANY(%(models)s::text[]))
            ORDER BY jobs.created_at, jobs.id LIMIT 1
        ) AS first
        WHERE owners.owner IS NOT NULL
    )
"""
"""The fair claim's candidates: for each key with queued jobs (found by a loose scan of
``jobs_queued_owner``, one probe per key) that has a claimable job, its oldest, its
priority's rank (0 high .. 2 low), its generating jobs and their limit, and when its newest
job started."""


def _note_pace(conn: PgConnection, row: DictRow) -> None:
    """Fold the generation seconds of the job that just completed (``row``) into its model's
    moving mean, in the caller's transaction."""
    conn.execute(
        """
        INSERT INTO model_pace (model, mean_seconds, samples, updated_at)
        VALUES (%(model)s, %(seconds)s, 1, %(now)s)
        ON CONFLICT (model) DO UPDATE SET
            mean_seconds = model_pace.mean_seconds
                + %(weight)s * (EXCLUDED.mean_seconds - model_pace.mean_seconds),
            samples = model_pace.samples + 1, updated_at = EXCLUDED.updated_at
        """,
        {
            "model": row["model"],
            "seconds": max(0.0, row["finished_at"] - row["started_at"]),
            "now": row["finished_at"],
            "weight": PACE_WEIGHT,
        },
    )


def _one(row: DictRow | None) -> DictRow:
    """The row of a statement that always returns one (an INSERT, or an UPDATE of a row this
    transaction holds locked)."""
    assert row is not None
    return row
