"""The SQLite job store: one database file shared by the API process and worker processes.

Concurrency model: each ``SQLiteJobStore`` owns one connection guarded by a lock, so one
instance may be shared by the threads of a process (they take turns; the work per call is
a few statements). Processes coordinate through SQLite's own file locking: WAL mode lets
readers run beside the single writer, every write is one ``BEGIN IMMEDIATE`` transaction
(the write lock is taken up front, so a claim's select-then-update cannot interleave with
another claim), taken in turns through a lock on ``<database>.turn`` so that no process
starves the others, and ``busy_timeout`` makes a writer wait instead of failing.
Open one store per process, after any fork; a store used from another process raises.

Durability: ``synchronous=FULL`` makes each commit reach the disk before the call returns.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from reelforge.contract import Status
from reelforge.jobs.model import CANCELLED, WORKER_LOST, ApiKey, Job, Lease

MIN_SQLITE_VERSION: Final = (3, 35, 0)
"""``UPDATE ... RETURNING`` arrived in SQLite 3.35."""
SCHEMA_VERSION: Final = 4
BUSY_TIMEOUT_MS: Final = 5000
MAX_TURN_PAUSE_S: Final = 0.002

T = TypeVar("T")

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY)",
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        model TEXT NOT NULL,
        request TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'generating', 'completed', 'error')),
        progress INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
        lease_token TEXT,
        lease_expires_at REAL,
        worker_id TEXT,
        error_name TEXT,
        error_message TEXT,
        video_key TEXT,
        credits_used REAL CHECK (credits_used IS NULL OR credits_used >= 0),
        meta TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        CONSTRAINT attempts_in_range CHECK (attempts >= 0 AND attempts <= max_attempts),
        CONSTRAINT queued_can_be_claimed CHECK (status <> 'queued' OR attempts < max_attempts),
        CONSTRAINT generating_has_lease CHECK (
            status <> 'generating' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
        ),
        CONSTRAINT only_generating_has_lease CHECK (
            status = 'generating' OR (lease_token IS NULL AND lease_expires_at IS NULL)
        ),
        CONSTRAINT completed_has_video CHECK (
            status <> 'completed' OR (video_key IS NOT NULL AND progress = 100)
        ),
        CONSTRAINT error_has_reason CHECK (
            status <> 'error' OR (error_name IS NOT NULL AND error_message IS NOT NULL)
        ),
        CONSTRAINT queued_not_finished CHECK (status <> 'queued' OR finished_at IS NULL),
        CONSTRAINT terminal_is_finished CHECK (
            status NOT IN ('completed', 'error') OR finished_at IS NOT NULL
        )
    )
    """,
    "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at)",
    """
    CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_expires_at)
        WHERE status = 'generating'
    """,
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    )
    """,
    "CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix)",
    """
    INSERT INTO schema_version (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version)
    """,
)

_UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    2: (
        "ALTER TABLE jobs ADD COLUMN purged_at REAL",
        """
        CREATE INDEX jobs_finished ON jobs (finished_at)
            WHERE finished_at IS NOT NULL AND purged_at IS NULL
        """,
        """
        CREATE TABLE chores (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL
        )
        """,
    ),
    3: ("ALTER TABLE jobs ADD COLUMN cancel_requested_at REAL",),
    4: (
        """
        CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            models TEXT NOT NULL,
            seen_at REAL NOT NULL
        )
        """,
    ),
}
"""Schema changes after the first, applied in order at open: version → statements."""


class SQLiteJobStore:
    """A ``JobStore`` on one SQLite file (see the module docstring for threads/processes)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating if missing) the database at ``path``.

        Raises ``RuntimeError`` if the SQLite library is older than 3.35 or the file holds
        a schema version this code does not know, or cannot be put in WAL mode.
        """
        _require_sqlite_version(sqlite3.sqlite_version)
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._path = path
        self._turns = open(f"{path}.turn", "a+b")  # noqa: SIM115 (closed by close())
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        # Reads go through one read-only connection per thread: under WAL they never wait
        # for a writer, nor for this store's write lock (the API reads on its event loop).
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        try:
            self._configure()
        except BaseException:
            self._conn.close()
            self._turns.close()
            raise

    def _configure(self) -> None:
        """Set the connection's pragmas and create the schema if it is missing."""
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._enter_wal()
        if mode != "wal":
            raise RuntimeError(f"the job database needs WAL mode; SQLite kept {mode!r}")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
            if len(versions) != 1 or not 1 <= versions[0] <= SCHEMA_VERSION:
                raise RuntimeError(
                    f"the job database has schema versions {versions}; this reelforge knows "
                    f"1 to {SCHEMA_VERSION}"
                )
            for version in range(versions[0] + 1, SCHEMA_VERSION + 1):
                for statement in _UPGRADES[version]:
                    conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (version,))

    def _enter_wal(self) -> str:
        """Switch the database to WAL; returns the journal mode SQLite reports after.

        Several processes opening a new database at once race to convert it, and SQLite
        answers the losers "database is locked" at once, without its busy handler.
        """
        row = _while_busy(
            lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone(),
            busy=lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc),
            pause=0.01,
        )
        return str(row[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock first, commits or rolls back."""
        with self._locked() as conn, self._writer_turn():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Processes take turns at writing through a lock on a file beside the database.

        SQLite's own busy handler retries with sleeps growing to 100 ms, so a process
        writing back to back can starve another one (create p99 1.4 s with two API
        processes); this lock is retried every 2 ms at most, so a waiting writer gets the
        next turn. After ``busy_timeout`` it gives up as SQLite would.
        """
        try:
            _while_busy(
                lambda: fcntl.flock(self._turns, fcntl.LOCK_EX | fcntl.LOCK_NB),
                busy=lambda exc: isinstance(exc, BlockingIOError),
                pause=0.0002,
                max_pause=MAX_TURN_PAUSE_S,
            )
        except BlockingIOError:
            raise sqlite3.OperationalError(
                "database is locked: another process kept its write turn"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(self._turns, fcntl.LOCK_UN)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:
            raise RuntimeError("SQLiteJobStore was opened in another process; open one per process")
        with self._lock:
            yield self._conn

    def _read(self) -> sqlite3.Connection:
        """This thread's read-only connection (autocommit: each query sees the latest commit)."""
        if os.getpid() != self._pid:
            raise RuntimeError("SQLiteJobStore was opened in another process; open one per process")
        reader: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if reader is None:
            reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            reader.execute("PRAGMA query_only = ON")
            self._readers.conn = reader
            with self._lock:
                self._all_readers.append(reader)
        return reader

    def create(self, *, owner: str, model: str, request: dict[str, Any], max_attempts: int) -> Job:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        params = {"id": uuid.uuid4().hex, "owner": owner, "model": model, "now": self._clock()}
        with self._write() as conn:
            row = conn.execute(
                """
                INSERT INTO jobs (id, owner, model, request, status, progress, attempts,
                                  max_attempts, meta, created_at, updated_at)
                VALUES (:id, :owner, :model, :request, 'queued', 0, 0,
                        :max_attempts, '{}', :now, :now)
                RETURNING *
                """,
                {**params, "request": _dump_json(request), "max_attempts": max_attempts},
            ).fetchone()
        return _job_from_row(row)

    def get(self, job_id: str, *, owner: str | None = None) -> Job | None:
        row = (
            self._read()
            .execute(
                "SELECT * FROM jobs WHERE id = :id AND (:owner IS NULL OR owner = :owner)",
                {"id": job_id, "owner": owner},
            )
            .fetchone()
        )
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
            "models": None if models is None else json.dumps(sorted(models)),
        }
        with self._write() as conn:
            _settle_expired(conn, now)
            row = conn.execute(
                """
                UPDATE jobs
                SET status = 'generating', lease_token = :token, lease_expires_at = :expires,
                    attempts = attempts + 1, worker_id = :worker_id, progress = 0,
                    started_at = COALESCE(started_at, :now), updated_at = :now
                WHERE status = 'queued' AND id = (
                    SELECT id FROM jobs
                    WHERE status = 'queued'
                      AND (:models IS NULL OR model IN (SELECT value FROM json_each(:models)))
                    ORDER BY created_at, id
                    LIMIT 1
                )
                RETURNING *
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
            SET lease_expires_at = :expires, progress = COALESCE(:progress, progress),
                updated_at = :now
            WHERE id = :id AND lease_token = :token AND status = 'generating'
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
            SET status = 'completed', progress = 100, video_key = :video_key,
                credits_used = :credits_used, meta = :meta, lease_token = NULL,
                lease_expires_at = NULL, finished_at = :now, updated_at = :now
            WHERE id = :id AND lease_token = :token AND status = 'generating'
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
            SET status = 'error', error_name = :error_name, error_message = :error_message,
                credits_used = :credits_used, lease_token = NULL, lease_expires_at = NULL,
                finished_at = :now, updated_at = :now
            WHERE id = :id AND lease_token = :token AND status = 'generating'
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
                lease_expires_at = NULL, worker_id = NULL, updated_at = :now
            WHERE id = :id AND lease_token = :token AND status = 'generating'
            """,
            lease,
            {"now": self._clock()},
        )

    def _update_leased(self, sql: str, lease: Lease, params: dict[str, Any]) -> bool:
        """Run an UPDATE conditional on ``:id``/``:token``; True if it changed the job."""
        with self._write() as conn:
            cursor = conn.execute(sql, {**params, "id": lease.job.id, "token": lease.token})
        return cursor.rowcount == 1

    def settle_expired(self) -> int:
        with self._write() as conn:
            return _settle_expired(conn, self._clock())

    def counts(self) -> dict[Status, int]:
        rows = self._read().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = {Status(status): count for status, count in rows}
        return {status: found.get(status, 0) for status in Status}

    def add_key(self, *, name: str, key_hash: str, prefix: str) -> ApiKey:
        params = {"id": uuid.uuid4().hex, "name": name, "key_hash": key_hash, "prefix": prefix}
        with self._write() as conn:
            row = conn.execute(
                """
                INSERT INTO api_keys (id, name, key_hash, prefix, created_at)
                VALUES (:id, :name, :key_hash, :prefix, :now)
                RETURNING id, name, created_at, revoked_at, prefix
                """,
                {**params, "now": self._clock()},
            ).fetchone()
        return ApiKey(**_fields(row))

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        row = (
            self._read()
            .execute(
                """
                SELECT id, name, created_at, revoked_at, prefix FROM api_keys
                WHERE key_hash = ? AND revoked_at IS NULL
                """,
                (key_hash,),
            )
            .fetchone()
        )
        return None if row is None else ApiKey(**_fields(row))

    def list_keys(self) -> list[ApiKey]:
        with self._locked() as conn:
            rows = conn.execute(
                """
                SELECT id, name, created_at, revoked_at, prefix FROM api_keys
                ORDER BY created_at, id
                """
            ).fetchall()
        return [ApiKey(**_fields(row)) for row in rows]

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        with self._write() as conn:
            ids = conn.execute(
                """
                SELECT id FROM api_keys
                WHERE (id = :needle OR prefix = :needle) AND revoked_at IS NULL
                """,
                {"needle": key_id_or_prefix},
            ).fetchall()
            if len(ids) > 1:
                raise ValueError(
                    f"{key_id_or_prefix!r} matches {len(ids)} active keys; revoke by id"
                )
            if ids:
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                    (self._clock(), ids[0]["id"]),
                )
        return len(ids) == 1

    def on_new_work(self, callback: Callable[[], None]) -> None:
        """Does nothing: SQLite has no notifications, so its workers poll."""

    def cancel(self, job_id: str, *, owner: str) -> Job | None:
        params = {"id": job_id, "owner": owner, "now": self._clock(), "name": CANCELLED}
        with self._write() as conn:
            conn.execute(
                """
                UPDATE jobs SET status = 'error', error_name = :name,
                    error_message = 'cancelled by the client', finished_at = :now,
                    updated_at = :now
                WHERE id = :id AND owner = :owner AND status = 'queued'
                """,
                params,
            )
            conn.execute(
                """
                UPDATE jobs SET cancel_requested_at = :now, updated_at = :now
                WHERE id = :id AND owner = :owner AND status = 'generating'
                  AND cancel_requested_at IS NULL
                """,
                params,
            )
            row = conn.execute(
                "SELECT * FROM jobs WHERE id = :id AND owner = :owner", params
            ).fetchone()
        return None if row is None else _job_from_row(row)

    def report_worker(self, worker_id: str, *, models: Collection[str]) -> None:
        with self._write() as conn:
            conn.execute(
                """
                INSERT INTO workers (id, models, seen_at) VALUES (:id, :models, :now)
                ON CONFLICT (id) DO UPDATE SET models = :models, seen_at = :now
                """,
                {"id": worker_id, "models": json.dumps(sorted(models)), "now": self._clock()},
            )

    def ready_models(self, *, seen_since: float) -> set[str]:
        rows = (
            self._read()
            .execute(
                """
                SELECT DISTINCT model.value FROM workers, json_each(workers.models) AS model
                WHERE workers.seen_at >= ?
                """,
                (seen_since,),
            )
            .fetchall()
        )
        return {row[0] for row in rows}

    def take_chore(self, name: str, *, holder: str, seconds: float) -> bool:
        now = self._clock()
        with self._write() as conn:
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

    def finished_before(self, cutoff: float, *, limit: int) -> list[Job]:
        rows = (
            self._read()
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
        return [_job_from_row(row) for row in rows]

    def inputs_in_use(self, keys: Collection[str], *, excluding: Collection[str]) -> set[str]:
        rows = (
            self._read()
            .execute(
                """
                SELECT json_extract(request, '$.first_frame.key'),
                       json_extract(request, '$.last_frame.key')
                FROM jobs
                WHERE purged_at IS NULL
                  AND id NOT IN (SELECT value FROM json_each(:excluding))
                  AND (json_extract(request, '$.first_frame.key') IN
                           (SELECT value FROM json_each(:keys))
                       OR json_extract(request, '$.last_frame.key') IN
                           (SELECT value FROM json_each(:keys)))
                """,
                {"keys": json.dumps(sorted(keys)), "excluding": json.dumps(sorted(excluding))},
            )
            .fetchall()
        )
        return {key for row in rows for key in row if key in keys}

    def mark_purged(self, job_ids: Collection[str]) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET purged_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                (self._clock(), json.dumps(sorted(job_ids))),
            )

    def close(self) -> None:
        with self._lock:
            for reader in self._all_readers:
                reader.close()
            self._conn.close()
            self._turns.close()


def _while_busy(
    attempt: Callable[[], T],
    *,
    busy: Callable[[Exception], bool],
    pause: float,
    max_pause: float | None = None,
) -> T:
    """``attempt()``, tried again while it fails with an error ``busy`` accepts, for as long
    as ``busy_timeout`` would wait, pausing ``pause`` seconds between tries (doubling up to
    ``max_pause``); then its last error. For the waits SQLite's busy handler does not make."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not busy(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, max_pause or pause)


def _settle_expired(conn: sqlite3.Connection, now: float) -> int:
    """The expired-lease pass, inside the caller's write transaction; returns rows moved."""
    lost = conn.execute(
        """
        UPDATE jobs
        SET status = 'error', error_name = :worker_lost,
            error_message = printf('the worker stopped responding %d time%s',
                                   attempts, CASE attempts WHEN 1 THEN '' ELSE 's' END),
            lease_token = NULL, lease_expires_at = NULL, finished_at = :now, updated_at = :now
        WHERE status = 'generating' AND lease_expires_at < :now AND attempts >= max_attempts
        """,
        {"worker_lost": WORKER_LOST, "now": now},
    ).rowcount
    requeued = conn.execute(
        """
        UPDATE jobs
        SET status = 'queued', progress = 0, lease_token = NULL, lease_expires_at = NULL,
            worker_id = NULL, updated_at = :now
        WHERE status = 'generating' AND lease_expires_at < :now AND attempts < max_attempts
        """,
        {"now": now},
    ).rowcount
    return lost + requeued


def _job_from_row(row: sqlite3.Row) -> Job:
    fields = _fields(row)
    fields["status"] = Status(fields["status"])
    fields["request"] = json.loads(fields["request"])
    fields["meta"] = json.loads(fields["meta"])
    return Job(**fields)


def _fields(row: sqlite3.Row) -> dict[str, Any]:
    """The row as a dict keyed by column name (the columns match the record's fields)."""
    return dict(zip(row.keys(), row, strict=True))


def _dump_json(data: dict[str, Any]) -> str:
    """Strict JSON text (no NaN/Infinity, which PostgreSQL's jsonb refuses too)."""
    return json.dumps(data, allow_nan=False, separators=(",", ":"))


def _require_positive_lease(lease_seconds: float) -> None:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")


def _require_sqlite_version(version: str) -> None:
    found = tuple(int(part) for part in version.split("."))
    if found < MIN_SQLITE_VERSION:
        needed = ".".join(str(part) for part in MIN_SQLITE_VERSION)
        raise RuntimeError(
            f"SQLite {version} is too old for the job store; it needs {needed} or newer "
            "(for UPDATE ... RETURNING)"
        )
