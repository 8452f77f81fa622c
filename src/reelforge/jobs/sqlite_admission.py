"""The SQLite store's admission SQL (``jobs.admission``), run inside the store's write
transactions: SQLite has one writer at a time, so a create's usage count and its insert are
never interleaved with another create's."""

from __future__ import annotations

import sqlite3
from typing import Any

from reelforge.jobs import base
from reelforge.jobs.admission import (
    DAY_SECONDS,
    IDEMPOTENCY_PENDING_SECONDS,
    IDEMPOTENCY_SECONDS,
    RATE_WINDOW_SECONDS,
    Reservation,
    Usage,
)


def usage(conn: sqlite3.Connection, owner: str, now: float) -> Usage:
    """``owner``'s usage at ``now``: index reads (jobs_owner, jobs_owner_status,
    jobs_owner_started, jobs_claim)."""
    row = conn.execute(
        """
        WITH recent AS (
            SELECT COUNT(*) AS created, MIN(created_at) AS oldest FROM jobs
            WHERE owner = :owner AND created_at > :since
        ),
        waiting AS (
            SELECT COUNT(*) AS queued,
                   COALESCE(SUM(json_extract(request, '$.duration_s')), 0) AS seconds
            FROM jobs WHERE owner = :owner AND status = 'queued'
        ),
        today AS (
            SELECT COALESCE(SUM(json_extract(request, '$.duration_s')), 0) AS seconds
            FROM jobs WHERE owner = :owner AND started_at >= :midnight
        )
        SELECT recent.created, recent.oldest, waiting.queued, waiting.seconds, today.seconds,
               (SELECT COUNT(*) FROM jobs WHERE status = 'queued')
        FROM recent, waiting, today
        """,
        {
            "owner": owner,
            "since": now - RATE_WINDOW_SECONDS,
            "midnight": now - now % DAY_SECONDS,
        },
    ).fetchone()
    return Usage(now, *row)


def reserve(
    conn: sqlite3.Connection, *, owner: str, key: str, fingerprint: str, now: float
) -> Reservation | None:
    """``IdempotencyStore.reserve_idempotency`` in the caller's write transaction."""
    params = {"owner": owner, "key": key, "fingerprint": fingerprint, "now": now}
    conn.execute(
        """
        DELETE FROM idempotency_keys
        WHERE owner = :owner AND key = :key
          AND (created_at <= :now - :kept OR (job_id IS NULL AND created_at <= :now - :pending))
        """,
        {**params, "kept": IDEMPOTENCY_SECONDS, "pending": IDEMPOTENCY_PENDING_SECONDS},
    )
    taken = conn.execute(
        """
        INSERT INTO idempotency_keys (owner, key, fingerprint, created_at)
        VALUES (:owner, :key, :fingerprint, :now)
        ON CONFLICT (owner, key) DO NOTHING
        RETURNING key
        """,
        params,
    ).fetchone()
    if taken is not None:
        return None
    held = conn.execute(
        """
        SELECT idempotency_keys.fingerprint, jobs.* FROM idempotency_keys
        LEFT JOIN jobs ON jobs.id = idempotency_keys.job_id
        WHERE idempotency_keys.owner = :owner AND idempotency_keys.key = :key
        """,
        params,
    ).fetchone()
    fields: dict[str, Any] = dict(zip(held.keys(), held, strict=True))
    fingerprint = fields.pop("fingerprint")
    return Reservation(fingerprint, None if fields["id"] is None else base.job_from_row(fields))


def abandon(conn: sqlite3.Connection, *, owner: str, key: str) -> None:
    conn.execute(
        "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND job_id IS NULL",
        (owner, key),
    )


def bind(conn: sqlite3.Connection, *, owner: str, key: str, job_id: str) -> None:
    """Record that ``key`` made ``job_id`` (the create's transaction)."""
    conn.execute(
        "UPDATE idempotency_keys SET job_id = ? WHERE owner = ? AND key = ?",
        (job_id, owner, key),
    )


def prune(conn: sqlite3.Connection, now: float) -> int:
    """Drop idempotency keys past ``IDEMPOTENCY_SECONDS`` (at most ``base.PRUNE_BATCH``)."""
    return conn.execute(
        """
        DELETE FROM idempotency_keys WHERE rowid IN (
            SELECT rowid FROM idempotency_keys WHERE created_at <= ? LIMIT ?
        )
        """,
        (now - IDEMPOTENCY_SECONDS, base.PRUNE_BATCH),
    ).rowcount
