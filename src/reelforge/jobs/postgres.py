"""The PostgreSQL job store: one database shared by API processes and workers on many machines.

Concurrency model: each ``PostgresJobStore`` owns a pool of connections (thread-safe; open
one store per process, after any fork). Every method is one short transaction on one
pooled connection, never held while a job runs. Claims never wait for each other: the
claim locks the oldest eligible queued job with ``FOR UPDATE SKIP LOCKED``, so concurrent
claimers take different jobs, and the expired-lease pass skips rows another transaction
holds. The store does not create its schema: ``reelforge db upgrade`` (``jobs.migrate``)
does, and the store refuses a schema older or newer than the code's.

New work: ``create`` sends ``NOTIFY reelforge_jobs`` (payload: the model) in its own
transaction, delivered at commit. ``on_new_work`` listens on a dedicated connection.

The URL may carry ``options=-c search_path=...`` to keep the tables in their own schema;
notifications are database-wide.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, Final

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import DictRow, dict_row
    from psycopg_pool import ConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the PostgreSQL job store needs: pip install 'reelforge[postgres]'") from exc

from reelforge.contract import Status
from reelforge.jobs import migrate
from reelforge.jobs.model import CANCELLED, WORKER_LOST, ApiKey, Job, Lease

log = logging.getLogger(__name__)

CHANNEL: Final = "reelforge_jobs"
"""The NOTIFY channel ``create`` signals on; the payload is the new job's model."""
POOL_TIMEOUT_S: Final = 10.0
"""Longest wait for a pooled connection (or a first connection) before failing, seconds."""
LISTEN_POLL_S: Final = 0.25
"""How often the listener thread checks whether the store is closing, seconds."""
RECONNECT_BACKOFF_S: Final = (0.1, 5.0)
"""First and largest wait before the listener reconnects, seconds (doubling in between)."""

PgConnection = psycopg.Connection[DictRow]


class PostgresJobStore:
    """A ``JobStore`` on PostgreSQL (see the module docstring for threads and processes)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        min_size: int = 1,
        max_size: int = 8,
    ) -> None:
        """Connect to the database at ``url`` (a URL or conninfo string).

        Raises ``RuntimeError`` if the schema is missing, older than this code's (run
        ``reelforge db upgrade``) or newer; ``psycopg.OperationalError`` if the database
        cannot be reached.
        """
        with psycopg.connect(url, connect_timeout=int(POOL_TIMEOUT_S)) as conn:
            migrate.require_current(conn)
        self._url = url
        self._clock = clock
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
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False

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

    def create(self, *, owner: str, model: str, request: dict[str, Any], max_attempts: int) -> Job:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        params = {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "model": model,
            "request": _dump_json(request),
            "max_attempts": max_attempts,
            "now": self._clock(),
            "channel": CHANNEL,
        }
        try:
            with self._transaction() as conn:
                row = conn.execute(
                    """
                    INSERT INTO jobs (id, owner, model, request, status, progress, attempts,
                                      max_attempts, meta, created_at, updated_at)
                    VALUES (%(id)s, %(owner)s, %(model)s, %(request)s::jsonb, 'queued', 0, 0,
                            %(max_attempts)s, '{}', %(now)s, %(now)s)
                    RETURNING *
                    """,
                    params,
                ).fetchone()
                conn.execute("SELECT pg_notify(%(channel)s, %(model)s)", params)
        except psycopg.errors.UntranslatableCharacter as exc:
            raise ValueError(f"request cannot be stored in PostgreSQL's jsonb: {exc}") from exc
        return _job_from_row(_found(row))

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        with self._connection() as conn:
            row = conn.execute(
                """
                SELECT * FROM jobs
                WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s::text)
                """,
                {"id": job_id, "owner": owner},
            ).fetchone()
        return None if row is None else _job_from_row(row)

    def claim(
        self, *, worker_id: str, lease_seconds: float, models: Collection[str] | None = None
    ) -> Lease | None:
        _require_positive_lease(lease_seconds)
        now = self._clock()
        token = secrets.token_hex(16)
        params = {
            "token": token,
            "expires": now + lease_seconds,
            "worker_id": worker_id,
            "now": now,
            "models": None if models is None else sorted(models),
        }
        with self._transaction() as conn:
            _settle_expired(conn, now)
            # Every eligibility filter is inside the locked sub-select: SKIP LOCKED then
            # moves on to the next eligible job instead of returning nothing.
            row = conn.execute(
                """
                WITH picked AS MATERIALIZED (
                    SELECT id FROM jobs
                    WHERE status = 'queued'
                      AND (%(models)s::text[] IS NULL OR model = ANY(%(models)s::text[]))
                    ORDER BY created_at, id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED
                )
                UPDATE jobs
                SET status = 'generating', lease_token = %(token)s,
                    lease_expires_at = %(expires)s, attempts = jobs.attempts + 1,
                    worker_id = %(worker_id)s, progress = 0,
                    started_at = COALESCE(jobs.started_at, %(now)s), updated_at = %(now)s
                FROM picked
                WHERE jobs.id = picked.id
                RETURNING jobs.*
                """,
                params,
            ).fetchone()
        return None if row is None else Lease(job=_job_from_row(row), token=token)

    def heartbeat(self, lease: Lease, *, lease_seconds: float, progress: int | None = None) -> bool:
        _require_positive_lease(lease_seconds)
        if progress is not None and not 0 <= progress <= 100:
            raise ValueError(f"progress must be between 0 and 100, got {progress}")
        now = self._clock()
        return self._update_leased(
            """
            UPDATE jobs
            SET lease_expires_at = %(expires)s,
                progress = COALESCE(%(progress)s::integer, progress), updated_at = %(now)s
            WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
              AND cancel_requested_at IS NULL
            """,
            lease,
            {"expires": now + lease_seconds, "progress": progress, "now": now},
        )

    def complete(
        self, lease: Lease, *, video_key: str, credits_used: float, meta: dict[str, Any]
    ) -> bool:
        return self._update_leased(
            """
            UPDATE jobs
            SET status = 'completed', progress = 100, video_key = %(video_key)s,
                credits_used = %(credits_used)s, meta = %(meta)s::jsonb, lease_token = NULL,
                lease_expires_at = NULL, finished_at = %(now)s, updated_at = %(now)s
            WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
            """,
            lease,
            {
                "video_key": video_key,
                "credits_used": credits_used,
                "meta": _dump_json(meta),
                "now": self._clock(),
            },
        )

    def fail(
        self, lease: Lease, *, error_name: str, error_message: str, credits_used: float
    ) -> bool:
        return self._update_leased(
            """
            UPDATE jobs
            SET status = 'error', error_name = %(error_name)s,
                error_message = %(error_message)s, credits_used = %(credits_used)s,
                lease_token = NULL, lease_expires_at = NULL, finished_at = %(now)s,
                updated_at = %(now)s
            WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
            """,
            lease,
            {
                "error_name": error_name,
                "error_message": error_message,
                "credits_used": credits_used,
                "now": self._clock(),
            },
        )

    def release(self, lease: Lease) -> bool:
        return self._update_leased(
            """
            UPDATE jobs
            SET status = 'queued', attempts = attempts - 1, progress = 0, lease_token = NULL,
                lease_expires_at = NULL, worker_id = NULL, updated_at = %(now)s
            WHERE id = %(id)s AND status = 'generating' AND lease_token = %(token)s
            """,
            lease,
            {"now": self._clock()},
        )

    def _update_leased(self, query: str, lease: Lease, params: dict[str, Any]) -> bool:
        """Run an UPDATE conditional on ``id``/``token``; True if it changed the job."""
        with self._connection() as conn:
            cursor = conn.execute(query, {**params, "id": lease.job.id, "token": lease.token})
        return cursor.rowcount == 1

    def settle_expired(self) -> int:
        with self._transaction() as conn:
            return _settle_expired(conn, self._clock())

    def counts(self) -> dict[Status, int]:
        with self._connection() as conn:
            rows = conn.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status").fetchall()
        found = {Status(row["status"]): int(row["n"]) for row in rows}
        return {status: found.get(status, 0) for status in Status}

    def add_key(self, *, name: str, key_hash: str, prefix: str) -> ApiKey:
        params = {"id": uuid.uuid4().hex, "name": name, "key_hash": key_hash, "prefix": prefix}
        with self._connection() as conn:
            row = conn.execute(
                """
                INSERT INTO api_keys (id, name, key_hash, prefix, created_at)
                VALUES (%(id)s, %(name)s, %(key_hash)s, %(prefix)s, %(now)s)
                RETURNING id, name, created_at, revoked_at, prefix
                """,
                {**params, "now": self._clock()},
            ).fetchone()
        return ApiKey(**_found(row))

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        with self._connection() as conn:
            row = conn.execute(
                """
                SELECT id, name, created_at, revoked_at, prefix FROM api_keys
                WHERE key_hash = %s AND revoked_at IS NULL
                """,
                (key_hash,),
            ).fetchone()
        return None if row is None else ApiKey(**row)

    def list_keys(self) -> list[ApiKey]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT id, name, created_at, revoked_at, prefix FROM api_keys
                ORDER BY created_at, id
                """
            ).fetchall()
        return [ApiKey(**row) for row in rows]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        with self._transaction() as conn:
            ids = conn.execute(
                """
                SELECT id FROM api_keys
                WHERE (id = %(needle)s OR prefix = %(needle)s) AND revoked_at IS NULL
                FOR UPDATE
                """,
                {"needle": key_id_or_prefix},
            ).fetchall()
            if len(ids) > 1:
                raise ValueError(
                    f"{key_id_or_prefix!r} matches {len(ids)} active keys; revoke by id"
                )
            if ids:
                conn.execute(
                    "UPDATE api_keys SET revoked_at = %s WHERE id = %s",
                    (self._clock(), ids[0]["id"]),
                )
        return len(ids) == 1

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a listener thread) whenever a job may have been created.

        The first call starts a thread that ``LISTEN``s on its own connection; it calls
        every registered callback on each notification, and once each time ``LISTEN``
        starts, first or after a reconnect (notifications sent while nobody listened are
        lost). Callbacks run on that thread, so they must be quick; they only wake a
        worker, which then claims. One that raises is logged and the others still run.
        """
        with self._listener_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._listener is None:
                self._listener = _Listener(self._url)
                self._listener.add(callback)
                self._listener.start()
            else:
                self._listener.add(callback)

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._clock(), "name": CANCELLED}
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE jobs SET status = 'error', error_name = %(name)s,
                    error_message = 'cancelled by the client', finished_at = %(now)s,
                    updated_at = %(now)s
                WHERE id = %(id)s AND owner = %(owner)s AND status = 'queued'
                """,
                params,
            )
            conn.execute(
                """
                UPDATE jobs SET cancel_requested_at = %(now)s, updated_at = %(now)s
                WHERE id = %(id)s AND owner = %(owner)s AND status = 'generating'
                  AND cancel_requested_at IS NULL
                """,
                params,
            )
            row = conn.execute(
                "SELECT * FROM jobs WHERE id = %(id)s AND owner = %(owner)s", params
            ).fetchone()
        return None if row is None else _job_from_row(row)

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        with self._connection() as conn:
            conn.execute(
                """
                INSERT INTO workers (id, models, seen_at)
                VALUES (%(id)s, %(models)s::jsonb, %(now)s)
                ON CONFLICT (id) DO UPDATE
                    SET models = EXCLUDED.models, seen_at = EXCLUDED.seen_at
                """,
                {"id": worker_id, "models": json.dumps(sorted(models)), "now": self._clock()},
            )

    def ready_models(self, *, seen_since: float) -> set[str]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT DISTINCT jsonb_array_elements_text(models) AS model FROM workers
                WHERE seen_at >= %s
                """,
                (seen_since,),
            ).fetchall()
        return {row["model"] for row in rows}

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        now = self._clock()
        with self._connection() as conn:
            row = conn.execute(
                """
                INSERT INTO chores (name, holder, expires_at)
                VALUES (%(name)s, %(holder)s, %(until)s)
                ON CONFLICT (name) DO UPDATE SET holder = %(holder)s, expires_at = %(until)s
                    WHERE chores.expires_at < %(now)s OR chores.holder = %(holder)s
                RETURNING name
                """,
                {"name": name, "holder": holder, "until": now + seconds, "now": now},
            ).fetchone()
        return row is not None

    def finished_before(self, cutoff: float, *, limit: int) -> list[Job]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT * FROM jobs
                WHERE finished_at IS NOT NULL AND purged_at IS NULL AND finished_at < %s
                ORDER BY finished_at LIMIT %s
                """,
                (cutoff, limit),
            ).fetchall()
        return [_job_from_row(row) for row in rows]

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT request -> 'first_frame' ->> 'key' AS first,
                       request -> 'last_frame' ->> 'key' AS last
                FROM jobs
                WHERE purged_at IS NULL AND NOT (id = ANY(%(excluding)s))
                  AND (request -> 'first_frame' ->> 'key' = ANY(%(keys)s)
                       OR request -> 'last_frame' ->> 'key' = ANY(%(keys)s))
                """,
                {"keys": sorted(keys), "excluding": sorted(excluding)},
            ).fetchall()
        return {key for row in rows for key in (row["first"], row["last"]) if key in keys}

    def mark_purged(self, job_ids: Collection[str]) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE jobs SET purged_at = %s WHERE id = ANY(%s)",
                (self._clock(), sorted(job_ids)),
            )

    def close(self) -> None:
        with self._listener_lock:
            self._closed = True
            if self._listener is not None:
                self._listener.stop()
        self._pool.close()


class _Listener:
    """A daemon thread holding a ``LISTEN`` connection, reconnecting with backoff."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reelforge-listen", daemon=True)

    def add(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wait for it (at most a poll interval and a connect)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        delay, max_delay = RECONNECT_BACKOFF_S
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=int(POOL_TIMEOUT_S)
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    delay = RECONNECT_BACKOFF_S[0]
                    # Jobs created while nobody listened sent notifications nobody got.
                    self._notify()
                    self._listen(conn)
            except psycopg.Error:
                log.warning("job notifications lost; reconnecting in %.1f s", delay, exc_info=True)
                self._stopping.wait(delay)
                delay = min(delay * 2, max_delay)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stopping.is_set():
            for _ in conn.notifies(timeout=LISTEN_POLL_S):
                self._notify()

    def _notify(self) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a new-work callback raised; the listener goes on")


def _settle_expired(conn: PgConnection, now: float) -> int:
    """The expired-lease pass, inside the caller's transaction; returns rows moved.

    Rows another transaction holds (a heartbeat in flight, another settler) are skipped.
    """
    params = {"worker_lost": WORKER_LOST, "now": now}
    lost = conn.execute(
        """
        UPDATE jobs
        SET status = 'error', error_name = %(worker_lost)s,
            error_message = 'the worker stopped responding ' || attempts || ' time'
                            || CASE attempts WHEN 1 THEN '' ELSE 's' END,
            lease_token = NULL, lease_expires_at = NULL, finished_at = %(now)s,
            updated_at = %(now)s
        WHERE id IN (
            SELECT id FROM jobs
            WHERE status = 'generating' AND lease_expires_at < %(now)s
              AND attempts >= max_attempts
            FOR UPDATE SKIP LOCKED
        )
        """,
        params,
    ).rowcount
    requeued = conn.execute(
        """
        UPDATE jobs
        SET status = 'queued', progress = 0, lease_token = NULL, lease_expires_at = NULL,
            worker_id = NULL, updated_at = %(now)s
        WHERE id IN (
            SELECT id FROM jobs
            WHERE status = 'generating' AND lease_expires_at < %(now)s
              AND attempts < max_attempts
            FOR UPDATE SKIP LOCKED
        )
        """,
        params,
    ).rowcount
    return lost + requeued


def _job_from_row(row: DictRow) -> Job:
    """The row as a ``Job`` (jsonb columns arrive as Python data already)."""
    return Job(**{**row, "status": Status(row["status"])})


def _found(row: DictRow | None) -> DictRow:
    """The row of an INSERT ... RETURNING, which always returns one."""
    assert row is not None
    return row


def _dump_json(data: dict[str, Any]) -> str:
    """Strict JSON text: NaN and Infinity raise ``ValueError``, as jsonb refuses them."""
    return json.dumps(data, allow_nan=False, separators=(",", ":"))


def _require_positive_lease(lease_seconds: float) -> None:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
