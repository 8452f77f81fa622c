"""The SQLite job store: one database file shared by the API process and worker processes
on one machine (connections, write turns and durability: ``sqlitefile.py``).

Times come from the store's clock (``time.time`` unless a test injects one): every process
is on the same machine. The schema is migrated as the store opens (``migrate.upgrade_sqlite``).
SQLite has no notifications: ``on_new_work`` and ``on_event`` do nothing and readers poll.
"""

from __future__ import annotations

import builtins
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from reelforge.contract import Status
from reelforge.jobs import base, migrate, sqlite_admission
from reelforge.jobs.admission import Admission, Reservation
from reelforge.jobs.base import Ending, StoreBase
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
from reelforge.jobs.sqlite_outbox import SQLiteOutbox
from reelforge.jobs.sqlitefile import SQLiteFile
from reelforge.request import JobRequest


class SQLiteJobStore(StoreBase, SQLiteOutbox):
    """A ``Store`` on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        key_max_running: int | None = None,
    ) -> None:
        """Open (creating if missing) the database at ``path`` and migrate it.
        ``key_max_running`` is the claim's limit for keys without their own ``max_running``
        (None: none).

        Raises ``RuntimeError`` if the SQLite library is older than 3.35, the file holds a
        schema newer than this code, or it cannot be put in WAL mode.
        """
        self._clock = clock
        self._key_max_running = key_max_running
        self._db = SQLiteFile(path)
        try:
            migrate.upgrade_sqlite(self._db.write)
        except BaseException:
            self._db.close()
            raise

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
            now=self._clock(),
        )
        with self._db.write() as conn:
            if admission is not None and admission.check is not None:
                admission.check(sqlite_admission.usage(conn, owner, params["now"]))
            row = conn.execute(
                """
                INSERT INTO jobs (id, owner, model, request, status, progress, attempts,
                                  max_attempts, meta, created_at, updated_at, dialect,
                                  callback_url, lora)
                VALUES (:id, :owner, :model, :request, 'queued', 0, 0, :max_attempts, '{}',
                        :now, :now, :dialect, :callback_url, :lora)
                RETURNING *
                """,
                params,
            ).fetchone()
            conn.executemany(
                "INSERT OR IGNORE INTO job_inputs (job_id, key) VALUES (?, ?)",
                [(params["id"], key) for key in request.input_keys],
            )
            _append(conn, row, EventKind.QUEUED)
            if admission is not None and admission.idempotency_key is not None:
                key = admission.idempotency_key
                sqlite_admission.bind(conn, owner=owner, key=key, job_id=row["id"])
        return base.job_from_row(_fields(row))

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        row = (
            self._db.read()
            .execute(
                """
                SELECT * FROM jobs
                WHERE id = :id AND (:owner IS NULL OR owner = :owner) AND deleted_at IS NULL
                """,
                {"id": job_id, "owner": owner},
            )
            .fetchone()
        )
        return None if row is None else base.job_from_row(_fields(row))

    def list(
        self, *, owner: str, limit: int, after: str | None = None, order: ListOrder = "desc"
    ) -> list[Job]:
        past, direction = self._list_direction(limit, order)
        rows = (
            self._db.read()
            .execute(
                f"""
                SELECT * FROM jobs
                WHERE owner = :owner AND deleted_at IS NULL
                  AND (:after IS NULL OR (created_at, id) {past} (
                      SELECT created_at, id FROM jobs WHERE id = :after AND owner = :owner))
                ORDER BY created_at {direction}, id {direction}
                LIMIT :limit
                """,  # noqa: S608 (``past`` and ``direction`` are base.LIST_DIRECTIONS' constants)
                {"owner": owner, "after": after, "limit": limit},
            )
            .fetchall()
        )
        return [base.job_from_row(_fields(row)) for row in rows]

    def claim(
        self, *, worker_id: str, lease_seconds: float, models: Collection[str] | None = None
    ) -> Lease | None:
        self._check_lease(lease_seconds)
        now = self._clock()
        token = secrets.token_hex(16)
        params = {
            "token": token,
            "expires": now + lease_seconds,
            "worker_id": worker_id,
            "now": now,
            "models": None if models is None else json.dumps(sorted(models)),
            "max_running": self._key_max_running,
        }
        with self._db.write() as conn:
            self._settle_expired(conn, now)
            row = conn.execute(
                _FAIR_TURNS  # noqa: S608 (a constant of this module)
                + """
                UPDATE jobs
                SET status = 'generating', lease_token = :token, lease_expires_at = :expires,
                    attempts = attempts + 1, worker_id = :worker_id, progress = 0,
                    phase = 'preparing', started_at = COALESCE(started_at, :now),
                    updated_at = :now
                WHERE status = 'queued' AND id = (
                    SELECT turns.id FROM turns JOIN jobs ON jobs.id = turns.id
                    WHERE turns.running < turns.max_running
                    ORDER BY turns.rank, turns.running, turns.served_at NULLS FIRST,
                             jobs.created_at, jobs.id
                    LIMIT 1
                )
                RETURNING *
                """,
                params,
            ).fetchone()
            if row is not None:
                _append(conn, row, EventKind.STARTED, {"attempts": row["attempts"]})
        return None if row is None else Lease(job=base.job_from_row(_fields(row)), token=token)

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
        now = self._clock()
        params = {"expires": now + lease_seconds, "progress": progress, "phase": phase, "now": now}
        with self._db.write() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET lease_expires_at = :expires, progress = COALESCE(:progress, progress),
                    phase = COALESCE(:phase, phase), updated_at = :now
                WHERE id = :id AND lease_token = :token AND status = 'generating'
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            for row in rows:
                _note_progress(conn, row)
        return bool(rows)

    def finish(self, lease: Lease, outcome: Outcome) -> bool:
        with self._db.write() as conn:
            ended = self._end(
                conn,
                base.ending_of(outcome),
                where="id = :id AND lease_token = :token AND status = 'generating'",
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
        asked to cancel ends ``Cancelled`` instead."""
        now = self._clock()
        params = {"now": now, "run_after": now + delay_seconds, "retried": int(retried)}
        with self._db.write() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET status = 'queued', attempts = attempts - 1, retries = retries + :retried,
                    run_after = :run_after, progress = 0, phase = NULL, lease_token = NULL,
                    lease_expires_at = NULL, worker_id = NULL, updated_at = :now
                WHERE id = :id AND lease_token = :token AND status = 'generating'
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            for row in rows:
                _append(conn, row, EventKind.REQUEUED, {"reason": reason})
            if not rows:
                rows = self._end(
                    conn,
                    base.cancelled(),
                    where="id = :id AND lease_token = :token AND status = 'generating'"
                    " AND cancel_requested_at IS NOT NULL",
                    lease=lease,
                )
        return bool(rows)

    def set_upstream(self, lease: Lease, upstream_id: str) -> bool:
        params = {"upstream_id": upstream_id, "now": self._clock()}
        with self._db.write() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs SET upstream_id = :upstream_id, updated_at = :now
                WHERE id = :id AND lease_token = :token AND status = 'generating'
                RETURNING id
                """,
                lease,
                params,
            )
        return bool(rows)

    def fall_back(self, lease: Lease, *, model: str, reason: str) -> bool:
        params = {"model": model, "now": self._clock()}
        with self._db.write() as conn:
            rows = self._update_leased(
                conn,
                """
                UPDATE jobs
                SET status = 'queued', model = :model, upstream_id = NULL,
                    attempts = attempts - 1, run_after = NULL, progress = 0, phase = NULL,
                    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
                    updated_at = :now
                WHERE id = :id AND lease_token = :token AND status = 'generating'
                  AND cancel_requested_at IS NULL
                RETURNING *
                """,
                lease,
                params,
            )
            for row in rows:
                _append(conn, row, EventKind.REQUEUED, {"reason": reason, "model": model})
            if not rows:
                rows = self._end(
                    conn,
                    base.cancelled(),
                    where="id = :id AND lease_token = :token AND status = 'generating'"
                    " AND cancel_requested_at IS NOT NULL",
                    lease=lease,
                )
        return bool(rows)

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._clock()}
        with self._db.write() as conn:
            self._cancel(conn, params)
            row = conn.execute(
                "SELECT * FROM jobs WHERE id = :id AND owner = :owner AND deleted_at IS NULL",
                params,
            ).fetchone()
        return None if row is None else base.job_from_row(_fields(row))

    def delete(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._clock()}
        with self._db.write() as conn:
            self._cancel(conn, params)
            row = conn.execute(
                """
                UPDATE jobs SET deleted_at = :now, updated_at = :now
                WHERE id = :id AND owner = :owner AND deleted_at IS NULL
                RETURNING *
                """,
                params,
            ).fetchone()
            if row is not None:
                _append(conn, row, EventKind.DELETED)
        return None if row is None else base.job_from_row(_fields(row))

    def _cancel(self, conn: sqlite3.Connection, params: Mapping[str, Any]) -> None:
        """The client's cancel of job ``:id`` of ``:owner``, in the caller's transaction: a
        queued job ends ``Cancelled``, a generating one is marked."""
        self._end(
            conn,
            base.cancelled(),
            where="id = :id AND owner = :owner AND status = 'queued' AND deleted_at IS NULL",
            params=params,
        )
        conn.execute(
            """
            UPDATE jobs SET cancel_requested_at = :now, updated_at = :now
            WHERE id = :id AND owner = :owner AND status = 'generating'
              AND cancel_requested_at IS NULL AND deleted_at IS NULL
            """,
            params,
        )

    def settle_expired(self) -> int:
        with self._db.write() as conn:
            return self._settle_expired(conn, self._clock())

    def _settle_expired(self, conn: sqlite3.Connection, now: float) -> int:
        """The expired-lease pass, inside the caller's write transaction; returns jobs moved."""
        expired = conn.execute(
            """
            SELECT id, attempts, max_attempts, cancel_requested_at FROM jobs
            WHERE status = 'generating' AND lease_expires_at < ?
            """,
            (now,),
        ).fetchall()
        for job in expired:
            params = {"id": job["id"], "now": now}
            if job["cancel_requested_at"] is None and job["attempts"] < job["max_attempts"]:
                row = conn.execute(
                    """
                    UPDATE jobs
                    SET status = 'queued', progress = 0, phase = NULL, lease_token = NULL,
                        lease_expires_at = NULL, worker_id = NULL, updated_at = :now
                    WHERE id = :id AND status = 'generating'
                    RETURNING *
                    """,
                    params,
                ).fetchone()
                _append(conn, row, EventKind.REQUEUED, {"reason": "lease expired"})
                continue
            ending = base.worker_lost(job["attempts"])
            if job["cancel_requested_at"] is not None:
                ending = base.cancelled()
            self._end(conn, ending, where="id = :id AND status = 'generating'", params=params)
        return len(expired)

    def _end(
        self,
        conn: sqlite3.Connection,
        ending: Ending,
        *,
        where: str,
        params: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> builtins.list[sqlite3.Row]:
        """Every terminal transition: end the jobs matching ``where`` (one of this module's
        conditions, on ``:id``/``:token`` through ``_update_leased`` if ``lease`` is given)
        as ``ending`` says, appending its event for each; the rows ended."""
        query = f"""
            UPDATE jobs
            SET status = :status, progress = IIF(:status = 'completed', 100, progress),
                error_name = :error_name, error_message = :error_message,
                video_key = :video_key, credits_used = COALESCE(:credits_used, credits_used),
                meta = COALESCE(:meta, meta), lease_token = NULL, lease_expires_at = NULL,
                phase = NULL, finished_at = :now, updated_at = :now
            WHERE {where}
            RETURNING *
            """  # noqa: S608 (``where`` is one of this module's constant conditions)
        bound = {"now": self._clock(), **(params or {}), **ending.params()}
        if lease is None:
            rows = conn.execute(query, bound).fetchall()
        else:
            rows = self._update_leased(conn, query, lease, bound)
        for row in rows:
            _append(conn, row, ending.kind, ending.data)
        return rows

    def _update_leased(
        self, conn: sqlite3.Connection, sql: str, lease: Lease, params: Mapping[str, Any]
    ) -> builtins.list[sqlite3.Row]:
        """Run an UPDATE ... RETURNING conditional on ``:id``/``:token`` (every statement that
        acts on a lease goes through here); the rows it changed."""
        return conn.execute(sql, {**params, "id": lease.job.id, "token": lease.token}).fetchall()

    def counts(self, *, owner: str | None = None) -> dict[Status, int]:
        reader = self._db.read()
        if owner is None:
            rows = reader.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        else:
            rows = reader.execute(
                "SELECT status, COUNT(*) FROM jobs WHERE owner = ? GROUP BY status", (owner,)
            ).fetchall()
        found = {Status(status): count for status, count in rows}
        return {status: found.get(status, 0) for status in Status}

    def active_by_model(self) -> dict[tuple[str, Status], int]:
        rows = (
            self._db.read()
            .execute(
                "SELECT model, status, COUNT(*) FROM jobs"
                " WHERE status IN ('queued', 'generating') GROUP BY model, status"
            )
            .fetchall()
        )
        return {(model, Status(status)): count for model, status, count in rows}

    def events_after(
        self, after: int, *, limit: int = 100, job_id: str | None = None
    ) -> builtins.list[JobEvent]:
        self._check_limit(limit)
        if job_id is None:
            rows = (
                self._db.read()
                .execute(
                    "SELECT * FROM job_events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
                )
                .fetchall()
            )
        else:
            rows = (
                self._db.read()
                .execute(
                    "SELECT * FROM job_events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                    (job_id, after, limit),
                )
                .fetchall()
            )
        return [base.event_from_row(_fields(row)) for row in rows]

    def last_event_id(self) -> int:
        row = self._db.read().execute("SELECT COALESCE(MAX(id), 0) FROM job_events").fetchone()
        return int(row[0])

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Does nothing: SQLite has no notifications, so its workers poll."""

    def on_event(self, callback: Callable[[], None]) -> None:
        """Does nothing: SQLite has no notifications, so event readers poll."""

    # --- the archive ----------------------------------------------------------------------

    def finished_before(self, cutoff: float, *, limit: int) -> builtins.list[Job]:
        rows = (
            self._db.read()
            .execute(
                """
                SELECT * FROM jobs
                WHERE finished_at IS NOT NULL AND purged_at IS NULL AND finished_at < ?
                ORDER BY finished_at LIMIT ?
                """,
                (cutoff, limit),
            )
            .fetchall()
        )
        return [base.job_from_row(_fields(row)) for row in rows]

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        rows = (
            self._db.read()
            .execute(
                """
                SELECT DISTINCT job_inputs.key FROM job_inputs
                JOIN jobs ON jobs.id = job_inputs.job_id
                WHERE job_inputs.key IN (SELECT value FROM json_each(:keys))
                  AND job_inputs.job_id NOT IN (SELECT value FROM json_each(:excluding))
                  AND jobs.purged_at IS NULL AND jobs.deleted_at IS NULL
                """,
                {"keys": json.dumps(sorted(keys)), "excluding": json.dumps(sorted(excluding))},
            )
            .fetchall()
        )
        return {row[0] for row in rows}

    def mark_purged(self, job_ids: Collection[str]) -> None:
        params = {"ids": json.dumps(sorted(job_ids)), "now": self._clock()}
        with self._db.write() as conn:
            conn.execute(
                "UPDATE jobs SET purged_at = :now WHERE id IN (SELECT value FROM json_each(:ids))",
                params,
            )
            conn.execute(
                "DELETE FROM job_events WHERE job_id IN (SELECT value FROM json_each(:ids))",
                params,
            )
            conn.execute(
                "DELETE FROM job_inputs WHERE job_id IN (SELECT value FROM json_each(:ids))",
                params,
            )
            self._drop_deliveries(conn, json.dumps(sorted(job_ids)))

    def prune_events(self) -> int:
        params = {"cutoff": self._clock() - PROGRESS_EVENTS_KEPT_SECONDS, "batch": base.PRUNE_BATCH}
        with self._db.write() as conn:
            sqlite_admission.prune(conn, self._clock())
            return conn.execute(
                """
                DELETE FROM job_events WHERE id IN (
                    SELECT job_events.id FROM job_events
                    JOIN jobs ON jobs.id = job_events.job_id
                    WHERE job_events.kind = 'progress' AND jobs.finished_at < :cutoff
                    LIMIT :batch
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
        with self._db.write() as conn:
            row = conn.execute(
                """
                INSERT INTO api_keys (id, name, key_hash, prefix, created_at, rpm, max_queued,
                                      max_running, daily_video_seconds, priority)
                VALUES (:id, :name, :key_hash, :prefix, :now, :rpm, :max_queued, :max_running,
                        :daily_video_seconds, :priority)
                RETURNING id, name, created_at, revoked_at, prefix, rpm, max_queued,
                          max_running, daily_video_seconds, priority
                """,
                {**params, "now": self._clock()},
            ).fetchone()
        return base.key_from_row(_fields(row))

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        row = (
            self._db.read()
            .execute(
                """
                SELECT id, name, created_at, revoked_at, prefix, rpm, max_queued, max_running,
                       daily_video_seconds, priority
                FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL
                """,
                (key_hash,),
            )
            .fetchone()
        )
        return None if row is None else base.key_from_row(_fields(row))

    def key_revoked(self, key_hash: str) -> bool:
        row = (
            self._db.read()
            .execute(
                "SELECT 1 FROM api_keys WHERE key_hash = ? AND revoked_at IS NOT NULL",
                (key_hash,),
            )
            .fetchone()
        )
        return row is not None

    def list_keys(self) -> builtins.list[ApiKey]:
        rows = (
            self._db.read()
            .execute(
                """
                SELECT id, name, created_at, revoked_at, prefix, rpm, max_queued, max_running,
                       daily_video_seconds, priority
                FROM api_keys ORDER BY created_at, id
                """
            )
            .fetchall()
        )
        return [base.key_from_row(_fields(row)) for row in rows]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        with self._db.write() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            if ids:
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ?", (self._clock(), ids[0])
                )
        return len(ids) == 1

    def set_key_priority(self, key_id_or_prefix: str, priority: Priority) -> bool:
        with self._db.write() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            if ids:
                conn.execute(
                    "UPDATE api_keys SET priority = ? WHERE id = ?",
                    (Priority(priority).value, ids[0]),
                )
        return len(ids) == 1

    def _active_key_ids(
        self, conn: sqlite3.Connection, key_id_or_prefix: str
    ) -> builtins.list[str]:
        """The id of the active key with this id or prefix (none or one); ``ValueError`` if
        a prefix matches several."""
        ids = conn.execute(
            """
            SELECT id FROM api_keys
            WHERE (id = :needle OR prefix = :needle) AND revoked_at IS NULL
            """,
            {"needle": key_id_or_prefix},
        ).fetchall()
        if len(ids) > 1:
            raise ValueError(f"{key_id_or_prefix!r} matches {len(ids)} active keys; use its id")
        return [row["id"] for row in ids]

    def set_key_limits(self, key_id_or_prefix: str, limits: KeyLimits) -> ApiKey | None:
        with self._db.write() as conn:
            ids = self._active_key_ids(conn, key_id_or_prefix)
            row = conn.execute(
                """
                UPDATE api_keys
                SET rpm = COALESCE(:rpm, rpm), max_queued = COALESCE(:max_queued, max_queued),
                    max_running = COALESCE(:max_running, max_running),
                    daily_video_seconds = COALESCE(:daily_video_seconds, daily_video_seconds)
                WHERE id = :id
                RETURNING id, name, created_at, revoked_at, prefix, rpm, max_queued,
                          max_running, daily_video_seconds, priority
                """,
                {**asdict(limits), "id": ids[0] if ids else None},
            ).fetchone()
        return None if row is None else base.key_from_row(_fields(row))

    # --- idempotency keys -----------------------------------------------------------------

    def reserve_idempotency(self, *, owner: str, key: str, fingerprint: str) -> Reservation | None:
        with self._db.write() as conn:
            return sqlite_admission.reserve(
                conn, owner=owner, key=key, fingerprint=fingerprint, now=self._clock()
            )

    def abandon_idempotency(self, *, owner: str, key: str) -> None:
        with self._db.write() as conn:
            sqlite_admission.abandon(conn, owner=owner, key=key)

    # --- coordination ---------------------------------------------------------------------

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        with self._db.write() as conn:
            conn.execute(
                """
                INSERT INTO workers (id, models, seen_at) VALUES (:id, :models, :now)
                ON CONFLICT (id) DO UPDATE SET models = :models, seen_at = :now
                """,
                {"id": worker_id, "models": json.dumps(sorted(models)), "now": self._clock()},
            )

    def ready_models(self, *, within: float) -> set[str]:
        rows = (
            self._db.read()
            .execute(
                """
                SELECT DISTINCT model.value FROM workers, json_each(workers.models) AS model
                WHERE workers.seen_at >= ?
                """,
                (self._clock() - within,),
            )
            .fetchall()
        )
        return {row[0] for row in rows}

    def outlook(self, model: str, *, within: float) -> ModelOutlook:
        now = self._clock()
        params = {"model": model, "since": now - within}
        conn = self._db.read()
        order = conn.execute(
            """
            SELECT id FROM (
                SELECT jobs.id, jobs.created_at,
                    CASE api_keys.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END
                        AS rank,
                    ROW_NUMBER() OVER (PARTITION BY jobs.owner ORDER BY jobs.created_at, jobs.id)
                        AS round
                FROM jobs LEFT JOIN api_keys ON api_keys.id = jobs.owner
                WHERE jobs.status = 'queued' AND jobs.model = :model
            )
            ORDER BY rank, round, created_at, id
            """,
            params,
        ).fetchall()
        pace = conn.execute(
            "SELECT mean_seconds FROM model_pace WHERE model = :model", params
        ).fetchone()
        (workers,) = conn.execute(
            """
            SELECT COUNT(*) FROM workers, json_each(workers.models) AS served
            WHERE served.value = :model AND (workers.seen_at >= :since OR workers.id IN (
                SELECT worker_id FROM jobs WHERE status = 'generating'))
            """,
            params,
        ).fetchone()
        running = conn.execute(
            """
            SELECT started_at FROM jobs WHERE status = 'generating' AND model = :model
            ORDER BY started_at
            """,
            params,
        ).fetchall()
        return ModelOutlook(
            order=tuple(row[0] for row in order),
            generation_seconds=None if pace is None else pace[0],
            workers=workers,
            running_since=tuple(row[0] for row in running),
            now=now,
        )

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        now = self._clock()
        with self._db.write() as conn:
            row = conn.execute(
                """
                INSERT INTO chores (name, holder, expires_at) VALUES (:name, :holder, :until)
                ON CONFLICT (name) DO UPDATE SET holder = :holder, expires_at = :until
                    WHERE chores.expires_at < :now OR chores.holder = :holder
                RETURNING name
                """,
                {"name": name, "holder": holder, "until": now + seconds, "now": now},
            ).fetchone()
        return row is not None

    def deployment_value(self, name: str, proposed: str) -> str:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO deployment (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, proposed),
            )
            row = conn.execute("SELECT value FROM deployment WHERE name = ?", (name,)).fetchone()
        return str(row["value"])

    def close(self) -> None:
        self._db.close()


_FAIR_TURNS: Final = """
    WITH RECURSIVE owners (owner) AS (
        SELECT MIN(owner) FROM jobs INDEXED BY jobs_queued_owner WHERE status = 'queued'
        UNION ALL
        SELECT (SELECT MIN(owner) FROM jobs INDEXED BY jobs_queued_owner
                WHERE status = 'queued' AND owner > owners.owner)
        FROM owners WHERE owner IS NOT NULL
    ),
    turns (owner, id, rank, running, max_running, served_at) AS MATERIALIZED (
        SELECT owner,
            (SELECT id FROM jobs
             WHERE status = 'queued' AND jobs.owner = owners.owner
               AND (run_after IS NULL OR run_after <= :now)
               AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
             ORDER BY created_at, id LIMIT 1),
            COALESCE((SELECT CASE priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END
                      FROM api_keys WHERE api_keys.id = owners.owner), 1),
            (SELECT COUNT(*) FROM jobs WHERE status = 'generating' AND jobs.owner = owners.owner),
            -- Admission: its max_running limit (its own, else the default :max_running;
            -- neither: no limit); the claim skips a key at it.
            COALESCE((SELECT max_running FROM api_keys WHERE api_keys.id = owners.owner),
                     :max_running, 1 << 62),
            (SELECT MAX(started_at) FROM jobs
             WHERE jobs.owner = owners.owner AND started_at IS NOT NULL)
        FROM owners WHERE owner IS NOT NULL
    )
"""
"""The fair claim's candidates: for each key with queued jobs (found by a loose scan of
``jobs_queued_owner``, one probe per key), its oldest claimable job (NULL if none: the join
drops it), its priority's rank (0 high .. 2 low), its generating jobs and their limit, and
when its newest job started."""


def _append(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    kind: EventKind,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Append the event of the change that left ``row``, in the caller's transaction."""
    conn.execute(
        """
        INSERT INTO job_events (job_id, owner, kind, status, progress, phase, created_at, data)
        VALUES (:job_id, :owner, :kind, :status, :progress, :phase, :created_at, :data)
        """,
        base.event_params(_fields(row), kind, data or {}),
    )


def _note_pace(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Fold the generation seconds of the job that just completed (``row``) into its model's
    moving mean, in the caller's transaction."""
    conn.execute(
        """
        INSERT INTO model_pace (model, mean_seconds, samples, updated_at)
        VALUES (:model, :seconds, 1, :now)
        ON CONFLICT (model) DO UPDATE SET
            mean_seconds = mean_seconds + :weight * (excluded.mean_seconds - mean_seconds),
            samples = samples + 1, updated_at = excluded.updated_at
        """,
        {
            "model": row["model"],
            "seconds": max(0.0, row["finished_at"] - row["started_at"]),
            "now": row["finished_at"],
            "weight": PACE_WEIGHT,
        },
    )


def _note_progress(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
    """Append a ``progress`` event after a heartbeat that left ``row``: always when the
    phase differs from the job's last event's, else when the progress differs and the job's
    last progress event is ``PROGRESS_EVENT_SECONDS`` old or more."""
    conn.execute(
        """
        WITH last AS (
            SELECT progress, phase FROM job_events
            WHERE job_id = :job_id ORDER BY id DESC LIMIT 1
        )
        INSERT INTO job_events (job_id, owner, kind, status, progress, phase, created_at, data)
        SELECT :job_id, :owner, :kind, :status, :progress, :phase, :created_at, :data
        WHERE NOT EXISTS (
            SELECT 1 FROM last
            WHERE last.phase IS :phase AND (last.progress = :progress OR EXISTS (
                SELECT 1 FROM job_events
                WHERE job_id = :job_id AND kind = 'progress' AND created_at > :created_at - :gap
            ))
        )
        """,
        {
            **base.event_params(_fields(row), EventKind.PROGRESS, {}),
            "gap": PROGRESS_EVENT_SECONDS,
        },
    )


def _fields(row: sqlite3.Row) -> dict[str, Any]:
    """The row as a dict keyed by column name."""
    return dict(zip(row.keys(), row, strict=True))
